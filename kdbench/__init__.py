"""kdbench: an open benchmark and leaderboard for knowledge distillation methods."""

__version__ = "0.1.0"
