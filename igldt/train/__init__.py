"""Training: one loop (loop.py) serving the supervised, teachers and student stages (stages.py)."""
