"""The kit's own tasks, imported so that each registers its TaskSpec (spec.py), in the order
they are listed to users. The runtime imports this module, and ``edge_aigc`` imports the
runtime, so every process that uses the kit knows them; another task registers itself the same
way from its own module (docs/design.md, "Adding a task")."""
from .text import task as text  # noqa: F401
from . import image, audio, speech, video  # noqa: F401  (video after image: image models serve it)
