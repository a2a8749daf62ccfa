"""Fine-tuning: jobs, their events and checkpoints; workers/fine_tuning.py trains them."""
