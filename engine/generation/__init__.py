"""DAKTer sample generation: the joint image-and-label generator (``joint_ddpm``), its training and sampling
jobs (``generator``), the sample folder (``samples``) and training a student on it (``distill``)."""
