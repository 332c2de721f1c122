"""What an analyst asks of the engine: detect slicks and write the outputs, score against labels, keep a
label store, and fine-tune a model on it (``finetune_data`` cuts its tiles, ``finetune`` runs it)."""
