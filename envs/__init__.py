"""Gymnasium environments over the denoising MDP, the task registry, and registration."""

from .tasks import TASKS, Task, get_task

__all__ = ["TASKS", "Task", "get_task"]
