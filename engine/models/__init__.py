"""Segmentation models: files and cards (``registry``), the SAM-LoRA network (``samlora``), SAROSS-Net
(``saross``), running one (``inference``) on the fastest runtime this machine has (``runtimes``, ``quantise``,
``cpu_features``), its losses, training loop and synthetic pretraining."""
