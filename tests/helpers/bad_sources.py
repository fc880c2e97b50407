"""Factories that break the source contract, each in its own way (for test_convert)."""
import torch


def returns_a_list():
    return [torch.nn.Linear(2, 2)]


def returns_not_a_module():
    return (lambda x: x, {"x": torch.zeros(1, 2)}, "image-generation")


def returns_unknown_task():
    return (torch.nn.Linear(2, 2), {"x": torch.zeros(1, 2)}, "video-generation")


def raises():
    raise RuntimeError("weights file missing")
