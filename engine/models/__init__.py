"""Segmentation models: files and cards (``registry``), the SAM-LoRA network (``samlora``), running one
(``inference``), its losses, training loop and synthetic pretraining."""
