"""Sample generation: the joint image-and-label generators DAKTer (``joint_ddpm``; its training and sampling jobs in
``generator``) and SAR-JointNet (``jointnet``), what both learn from (``training_set``) and their checkpointed stages
(``stages``), pretraining on real SAR texture (``pretrain``), their command line (``cli``), the sample folder
(``samples``) and training a student on it (``distill``)."""
