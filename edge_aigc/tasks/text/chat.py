"""Chat templates: a model's jinja2 template, rendered as Hugging Face's ``apply_chat_template`` does.

The template comes from the bundle (the model's own, from its tokenizer files or its GGUF
metadata) and runs in jinja2's immutable sandbox, with the same environment transformers
sets up (``trim_blocks``, ``lstrip_blocks``, ``loopcontrols``, ``raise_exception``,
``strftime_now``), so the rendered text — and so the token ids — are the ones the original
model was trained on. A template that does not compile is a bad bundle; one that refuses a
conversation (``raise_exception``) or fails on it is a bad request.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ...errors import BadRequest, BundleError

__all__ = ["ChatTemplate", "ROLES"]

ROLES = ("system", "user", "assistant")


def _raise(message: str) -> None:
    raise TemplateError(message)


class ChatTemplate:
    def __init__(self, source: str, bos_token: str = "", eos_token: str = "", model: str = "model"):
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                            extensions=["jinja2.ext.loopcontrols"])
        env.globals["raise_exception"] = _raise
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        try:
            self._template = env.from_string(source)
        except TemplateError as exc:
            raise BundleError(f"{model}: the bundle's chat template does not compile: {exc}") from None
        self.bos_token, self.eos_token, self.model = bos_token, eos_token, model

    @classmethod
    def for_model(cls, cfg, tokenizer, model: str) -> "ChatTemplate | None":
        """The template of a text model's config, with its BOS and first EOS token as text (None without one)."""
        if not cfg.chat_template:
            return None
        token = lambda i: (tokenizer.id_to_token(i) or "") if i is not None else ""  # noqa: E731
        return cls(cfg.chat_template, token(cfg.bos_token_id), token(next(iter(cfg.eos_token_id), None)), model)

    def render(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True) -> str:
        try:
            return self._template.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                         bos_token=self.bos_token, eos_token=self.eos_token)
        except TemplateError as exc:  # raise_exception(), or a template tripping over these messages
            raise BadRequest(f"parameter 'messages': {self.model}'s chat template refused them: {exc}") from None
        except (TypeError, ValueError, KeyError, IndexError) as exc:
            raise BadRequest(f"parameter 'messages': {self.model}'s chat template failed on them: "
                             f"{type(exc).__name__}: {exc}") from None
