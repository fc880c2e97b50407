"""Text generation: tokenizer from the bundle, prefill, then a KV-cache decode loop.

Sampling (greedy at temperature 0, else temperature / top-k / top-p / repetition
penalty with a seeded generator) streams ``Token`` events as text becomes safe to show.
Beam search (``num_beams`` > 1) keeps the beams as one batch through the same cache
and emits ``Progress`` per step, then the best sequence.
"""
from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ...backends.base import Session
from ...contract import Task
from ...errors import BadRequest, BundleError
from ...bundle.task_config import TextConfig, parse_task_config
from ..base import CancelToken, DecodeLoop, Event, Progress, Result, Token
from ..params import Param
from ..spec import TaskSpec, register
from .chat import ChatTemplate
from .detok import TextStreamer
from ...backends.llamacpp import LlamaCppSession
from .concat_loop import ConcatKvLoop
from .constrain import MAX_SCHEMA_BYTES, Grammars
from .decode import Decoder
from .lookup import DraftCosts, NgramDrafter
from .llama_loop import LlamaCppLoop
from .litert_loop import LiteRtKvLoop
from .sessions import Session as ChatSession, SessionCache
from .shared_loop import SharedKvLoop
from .sampling import SamplingConfig, apply_repetition_penalty, log_softmax

__all__ = ["TextTask", "make_kv_loop"]


def make_kv_loop(session: Session, cfg: TextConfig | dict[str, Any]) -> DecodeLoop:
    """The decode loop for the session's backend and cache layout: LiteRT signatures, or
    ONNX Runtime IO binding with the cache shared in place (``kv_layout: shared``) or
    passed from each step's outputs to the next step's inputs. A raw ``task_config`` dict
    (what the converters hold) is parsed first."""
    if isinstance(cfg, dict):
        cfg = parse_task_config(Task.TEXT, cfg)
    if session.backend == "litert":
        return LiteRtKvLoop(session, cfg)
    if session.backend == LlamaCppSession.backend:  # llama.cpp keeps the cache in its own context
        return LlamaCppLoop(session, cfg)
    return SharedKvLoop(session, cfg) if cfg.kv_layout == "shared" else ConcatKvLoop(session, cfg)


class TextTask:
    task = Task.TEXT

    def __init__(self, name: str, root: Path, cfg: TextConfig, session: Session):
        from tokenizers import Tokenizer

        self.name, self.cfg = name, cfg
        tok_path = root / cfg.tokenizer
        if not tok_path.is_file():
            raise BundleError(f"{name}: text bundle has no {tok_path.name}")
        self.tokenizer = Tokenizer.from_file(str(tok_path))
        self.loop = make_kv_loop(session, cfg)
        # A TFLite LM's cache has a fixed length, which bounds its context.
        self.max_context = min(cfg.max_context, self.loop.cache_length)
        self.eos = frozenset(cfg.eos_token_id)  # every id that ends generation (end of turn too)
        self.chat = ChatTemplate.for_model(cfg, self.tokenizer, name)
        self.sessions: SessionCache | None = None  # the runtime's, shared by its text models
        self.draft_costs = DraftCosts()            # what speculation costs and gives on this device
        self.grammars = Grammars(tok_path, self.eos)  # JSON schemas as token masks

    def encode(self, prompt: str, param: str = "prompt", special: bool = True) -> list[int]:
        ids = self.tokenizer.encode(prompt, add_special_tokens=special).ids
        if not ids:
            raise BadRequest(f"parameter {param!r}: encodes to no tokens")
        if len(ids) >= self.max_context:
            raise BadRequest(f"parameter {param!r}: {len(ids)} tokens; the model's context is "
                             f"{self.max_context}")
        return ids

    def encode_chat(self, messages: list[dict[str, str]]) -> list[int]:
        """The turns rendered with the model's chat template, then tokenized as transformers'
        ``apply_chat_template`` does (the template writes the special tokens itself)."""
        if self.chat is None:
            raise BadRequest(f"parameter 'messages': {self.name} has no chat template; give 'prompt'")
        return self.encode(self.chat.render(messages), "messages", special=False)

    def stream(self, params: dict[str, Any], cancel: CancelToken) -> Iterator[Event]:
        ids = self.encode_chat(params["messages"]) if params.get("messages") else self.encode(params["prompt"])
        budget = min(params["max_new_tokens"], self.max_context - len(ids))
        if params["num_beams"] > 1:
            for name in ("session", "json_schema"):
                if params.get(name) is not None:
                    raise BadRequest(f"parameter {name!r}: not with beam search (num_beams > 1)")
            yield from self._beam_events(ids, budget, params, cancel)
        else:
            yield from self._sample(ids, budget, params, cancel)

    def _sample(self, ids: list[int], budget: int, params: dict[str, Any],
                cancel: CancelToken) -> Iterator[Event]:
        cfg = SamplingConfig(params["temperature"], params["top_k"], params["top_p"],
                             params["repetition_penalty"])
        seed = params["seed"] if params["seed"] is not None else secrets.randbits(32)
        streamer = TextStreamer(self.tokenizer, params["stop"])
        schema = params.get("json_schema")
        constraint = self.grammars.constraint(schema) if schema is not None else None  # refused before any work
        start = time.perf_counter()
        state, kept, status = self._resume(params, ids)
        logits = self.loop.step(state, np.array([ids[kept:]]), last_only=True)[0, -1]
        prefill_s = time.perf_counter() - start
        mode = params["speculation"]
        drafter = None if mode == "off" or cfg.temperature else NgramDrafter(ids, self.draft_costs, mode == "on")
        decoder = Decoder(self.loop, state, list(ids), logits, cfg, np.random.default_rng(seed), drafter, constraint)
        generated, finish = [], "length"
        for index, token in enumerate(decoder.tokens(budget)):
            cancel.check()
            if token in self.eos:
                finish = "eos"
                break
            generated.append(token)
            if delta := streamer.push(token):
                yield Token(delta, token, index)
            if streamer.stopped:
                finish = "stop"
                break
        if tail := streamer.flush():
            yield Token(tail, generated[-1] if generated else -1, len(generated))
        extra = self._keep(params, state, decoder.settle(), status, kept, len(ids))
        if (speculation := decoder.speculation()) is not None:
            extra["speculation"] = speculation
        yield self._result(streamer.text, ids, generated, finish, start, prefill_s, seed=seed,
                           cached_tokens=kept, **extra)

    def _resume(self, params: dict[str, Any], ids: list[int]) -> tuple[Any, int, str]:
        """(decode state, tokens of ``ids`` already in it, session status): a session's cache,
        or without a session the owner's last one (prefix reuse), cut back to what it shares
        with ``ids`` (at least one token is left to feed)."""
        owner = params.get("session_owner", "")
        if params.get("session"):
            if self.sessions is None:
                raise BadRequest("parameter 'session': this runtime keeps no sessions")
            found, status = self.sessions.take(owner, params["session"], self.name)
        else:
            found, status = self.sessions.take_prefix(owner, self.name) if self.sessions else None, ""
        if found is None:
            return self.loop.start(1), 0, status
        kept = 0
        for a, b in zip(found.tokens, ids[:-1]):
            if a != b:
                break
            kept += 1
        self.loop.truncate(found.state, kept)
        return found.state, kept, status

    def _keep(self, params: dict[str, Any], state: Any, fed: list[int], status: str,
              kept: int, prompt: int) -> dict[str, Any]:
        """The cache back where the next request finds it: the session's, or the owner's prefix."""
        owner = params.get("session_owner", "")
        entry = ChatSession(self.name, state, fed, self.loop.state_bytes(state), 0.0)
        if params.get("session"):
            self.sessions.put(owner, params["session"], entry)
            return {"session": {"id": params["session"], "status": status, "reused_tokens": kept,
                                "prefilled_tokens": prompt - kept}}
        if self.sessions is not None:
            self.sessions.put_prefix(owner, self.name, entry)
        return {}

    def _result(self, text: str, ids: list[int], generated: list[int], finish: str, start: float,
                prefill_s: float, **extra: Any) -> Result:
        seconds = time.perf_counter() - start
        decode_s = max(seconds - prefill_s, 1e-9)
        meta = {"prompt_tokens": len(ids), "generated_tokens": len(generated), "finish_reason": finish,
                "token_ids": generated, "seconds": round(seconds, 4), "prefill_seconds": round(prefill_s, 4),
                "tokens_per_second": round(max(len(generated) - 1, 0) / decode_s, 2), **extra}
        return Result(self.name, self.task, text=text, meta=meta)

    def beam_search(self, ids: list[int], num_beams: int, budget: int, repetition_penalty: float = 1.0,
                    cancel: CancelToken | None = None) -> Iterator[Progress | list[int]]:
        """Yields Progress per step, then the best token list (EOS excluded).

        Beam search as Hugging Face ``generate()`` does it with its defaults (length penalty
        1.0, ``early_stopping=False``), so a converted model answers ``num_beams=5`` with the
        tokens the original gives: each step ranks ``max(2, 1 + #eos) * num_beams``
        continuations by summed log-probability (the repetition penalty applies to the
        log-probabilities, as there); one ending in EOS, or reaching the budget, among the
        top ``num_beams`` joins the finished set, scored by sum / generated length (EOS
        counted); the next beams are the best that did not end. The search stops when the
        finished set is full and the best open beam, normalised by its length, cannot beat
        its worst member. With one beam this is greedy decoding.
        """
        state = self.loop.start(1)
        logits = self.loop.step(state, np.array([ids]), last_only=True)[:, -1]
        beams: list[list[int]] = [[]]
        scores = np.zeros(1)
        finished: list[tuple[float, list[int]]] = []
        keep = max(2, 1 + len(self.eos)) * num_beams
        for step in range(budget):
            if cancel is not None:
                cancel.check()
            length, last = step + 1, step + 1 == budget
            logp = log_softmax(logits)
            rows = [apply_repetition_penalty(logp[b], ids + beams[b], repetition_penalty) for b in range(len(beams))]
            candidates = (scores[:, None] + np.stack(rows)).ravel()
            vocab = logits.shape[-1]
            parents, tokens, new_scores = [], [], []
            for rank, flat in enumerate(np.argsort(-candidates, kind="stable")[:keep]):
                parent, token = divmod(int(flat), vocab)
                if last or token in self.eos:
                    if rank < num_beams:
                        tail = [] if token in self.eos else [token]
                        finished.append((candidates[flat] / length, beams[parent] + tail))
                elif len(parents) < num_beams:
                    parents.append(parent)
                    tokens.append(token)
                    new_scores.append(candidates[flat])
            finished = sorted(finished, key=lambda f: -f[0])[:num_beams]
            yield Progress(step + 1, budget, "beam search")
            if last or not parents:
                break
            beams = [beams[p] + [t] for p, t in zip(parents, tokens)]
            scores = np.array(new_scores)
            if len(finished) == num_beams and scores.max() / length <= finished[-1][0]:
                break  # no open beam can still beat the finished ones
            self.loop.reorder(state, np.array(parents))
            logits = self.loop.step(state, np.array(tokens)[:, None])[:, -1]
        yield finished[0][1]

    def _beam_events(self, ids: list[int], budget: int, params: dict[str, Any],
                     cancel: CancelToken) -> Iterator[Event]:
        start = time.perf_counter()
        best: list[int] = []
        for item in self.beam_search(ids, params["num_beams"], budget, params["repetition_penalty"], cancel):
            if isinstance(item, Progress):
                yield item
            else:
                best = item
        streamer = TextStreamer(self.tokenizer, params["stop"])
        for token in best:
            streamer.push(token)
            if streamer.stopped:
                break
        text = streamer.text
        if text:
            yield Token(text, best[-1], 0)
        finish = "stop" if streamer.stopped else ("length" if len(best) >= budget else "eos")
        yield self._result(text, ids, best, finish, start, 0.0, num_beams=params["num_beams"])


TEXT_PARAMS = (
    Param("prompt", str, max_len=8192, help="text to continue (or give messages)"),
    Param("messages", list, None, max_len=64, items="message",
          help="chat turns [{role, content}] rendered with the model's chat template"),
    Param("max_new_tokens", int, 64, 1, 2048, "tokens to generate (capped by the context)"),
    Param("temperature", float, 0.8, 0.0, 5.0, "0 = greedy; higher = more random"),
    Param("top_k", int, 40, 0, 100_000, "sample from the k most likely tokens (0 = all)"),
    Param("top_p", float, 0.95, 0.01, 1.0, "nucleus sampling mass"),
    Param("repetition_penalty", float, 1.0, 0.5, 3.0, "> 1 discourages repeats"),
    Param("seed", int, None, 0, 2**32 - 1, "seed for reproducible sampling"),
    Param("num_beams", int, 1, 1, 8, "beam search width (1 = no beam search)"),
    Param("stop", list, [], help="stop strings (up to 4, each up to 64 characters)", max_len=4),
    Param("speculation", str, "auto", choices=("auto", "on", "off"),
          help="greedy decoding checks drafts copied from the prompt: where it pays (auto), "
               "always (on) or never (off); the output is the same either way"),
    Param("session", str, None, max_len=64,
          help="chat session id: later turns reuse its KV cache (edge_aigc/tasks/text/sessions.py)"),
    Param("json_schema", dict, None, max_len=MAX_SCHEMA_BYTES,
          help="hold the output to this JSON schema ({} for any JSON; tasks/text/constrain.py)"),
)


def _no_token(result: Result) -> str | None:
    return None if result.meta.get("generated_tokens", 0) >= 1 else "generated no token"


def _text_figures(result: Result, seconds: float) -> dict[str, float]:
    m = result.meta
    return {"decode_tokens_per_s": m["tokens_per_second"], "prefill_ms": m["prefill_seconds"] * 1e3,
            "generated_tokens": m["generated_tokens"]}


SPEC = register(TaskSpec(
    Task.TEXT, TEXT_PARAMS, TextTask, config=TextConfig, one_of=("prompt", "messages"),
    smoke={"prompt": "Hello", "max_new_tokens": 4, "temperature": 0.0}, degenerate=_no_token,
    workload={"prompt": "Once upon a time, in a small village by the sea,", "max_new_tokens": 64,
              "temperature": 0.0},
    figures=_text_figures))
