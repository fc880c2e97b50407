"""Runtime: loaded models and one way to run them.

``Runtime(models, profile)`` takes a :class:`ModelStore` (every installed model) and/or
bundle paths, opens one backend session per model (created once, reused), and serves
``stream(model, **params)`` (events) and ``generate(model, **params)`` (the result).
The CLI's ``run``, the Python API and the MQTT service all go through ``stream``.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from ..backends import Session, open_session
from ..bundle.load import Bundle, is_bundle_path, load_bundle
from ..contract import also_serves, model_file
from ..device.detect import detect_profile
from ..errors import BadRequest, RequestError, UnknownModel
from ..bundle.manifest import NAME_RE
from ..device.profiles import Profile, get_profile
from ..bundle.store import ModelStore
from ..tasks import builtin  # noqa: F401  (registers the kit's own tasks)
from ..tasks.base import CancelToken, Event, Result, TaskRunner
from ..tasks.params import validate_params
from ..tasks.spec import get_spec
from ..tasks.text.sessions import SessionCache, SessionLimits
from ..tasks.text.task import TextTask

__all__ = ["Runtime", "LoadedModel"]

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    bundle: Bundle
    session: Session
    task: TaskRunner                                   # the bundle's own task
    also: dict[str, TaskRunner] = field(default_factory=dict)  # the tasks it also serves (contract.also_serves)

    @property
    def defaults(self) -> dict[str, Any]:
        return getattr(self.bundle.manifest.config, "sampling", {})

    @property
    def tasks(self) -> list[str]:
        return [self.task.task, *self.also]

    def runner(self, task: str | None) -> TaskRunner:
        """The runner of ``task`` (None: the bundle's own); a task it does not serve is a BadRequest."""
        if task is None or task == self.task.task:
            return self.task
        if task not in self.also:
            raise BadRequest(f"'task': {self.bundle.manifest.name} serves {', '.join(self.tasks)}, not {task!r}")
        return self.also[task]


def _make_task(name: str, bundle: Bundle, session: Session) -> TaskRunner:
    """The bundle's task's runner (its TaskSpec's), on its typed config and session."""
    return get_spec(bundle.manifest.task).runner(name, bundle.root, bundle.manifest.config, session)


class Runtime:
    def __init__(self, models: ModelStore | Iterable[str | os.PathLike] | None = None,
                 profile: Profile | str | None = None, *, state_dir: str | os.PathLike | None = None,
                 threads: int | None = None, public_key=None, require_signature: bool | None = None,
                 session_limits: SessionLimits | None = None):
        self.profile = get_profile(profile) if isinstance(profile, str) else profile
        if self.profile is None:
            found = detect_profile()
            self.profile = found.profile if found else None
        self.state_dir = Path(state_dir) if state_dir else None
        self.threads = threads
        self.public_key, self.require_signature = public_key, require_signature  # as ModelStore's
        self.store: ModelStore | None = models if isinstance(models, ModelStore) else None
        self.sessions = SessionCache(session_limits)  # chat sessions of every text model
        self._paths: dict[str, Path] = {}
        self._loaded: dict[str, LoadedModel] = {}
        if models is not None and self.store is None:
            for path in models:
                self.load(path)

    # -- models -------------------------------------------------------------------
    def available(self) -> list[str]:
        names = set(self._loaded) | set(self._paths)
        if self.store is not None:
            names |= set(self.store.names())
        return sorted(names)

    def loaded(self) -> list[str]:
        return sorted(self._loaded)

    def load(self, model: str | os.PathLike) -> str:
        """Load an installed model by name or a bundle by path; returns the model name."""
        if is_bundle_path(model):
            path = Path(model)
            bundle = load_bundle(path, self.public_key, self.require_signature)
            name = self._open(bundle)
            self._paths[name] = path
            return name
        return self.load_name(str(model))

    def load_name(self, name: str) -> str:
        """Load a model by its name (installed, or a bundle this runtime opened before); never a
        path. This is what remote clients get: they name models, not files on the device."""
        if not NAME_RE.match(name):
            raise BadRequest(f"{name!r} is not a model name (names match {NAME_RE.pattern}; "
                             "bundle paths are not accepted here)")
        if name in self._loaded:
            return name
        if name in self._paths:
            return self._open(load_bundle(self._paths[name], self.public_key, self.require_signature))
        if self.store is not None and name in self.store.names():
            return self._open(self.store.open(name))
        raise UnknownModel(f"model {name!r} is not installed (installed: {', '.join(self.available()) or 'none'})")

    def _open(self, bundle: Bundle) -> str:
        name = bundle.manifest.name
        if name in self._loaded:
            bundle.close()
            return name
        self._loaded[name] = self._build(bundle)
        return name

    def reload(self, name: str) -> bool:
        """Swap a loaded model for its store's active version (after an install or a rollback);
        False when it was not loaded (the next request loads the active version). Call it
        between requests: the old version is closed once the new one is open."""
        old = self._loaded.get(name)
        if old is None or self.store is None:
            return False
        new = self._build(self.store.open(name))
        self._loaded[name] = new
        self.sessions.drop_model(name)
        old.bundle.close()
        return True

    def _build(self, bundle: Bundle) -> LoadedModel:
        name = bundle.manifest.name
        cache = self.state_dir / "trt-cache" / f"{name}-{bundle.manifest.version}" if self.state_dir else None
        model = bundle.manifest.config.model or model_file(bundle.manifest.format)
        session = open_session(bundle.manifest.format, bundle.file(model), self.profile, name, cache, self.threads)
        task = _make_task(name, bundle, session)
        if isinstance(task, TextTask):
            task.sessions = self.sessions
        also = {t: get_spec(t).runner(task) for t in also_serves(bundle.manifest.task)}
        log.info("loaded %s %s (%s, %s) on %s with %d threads", name, bundle.manifest.version, bundle.manifest.task,
                 bundle.manifest.recipe, ", ".join(session.providers), session.threads.threads)
        return LoadedModel(bundle, session, task, also)

    def unload(self, name: str) -> None:
        model = self._loaded.pop(name, None)
        if model is None:
            raise UnknownModel(f"model {name!r} is not loaded")
        self.sessions.drop_model(name)
        model.bundle.close()

    def model(self, name: str) -> LoadedModel:
        """A loaded model by name, loading it first when it is installed but not loaded yet."""
        if name not in self._loaded:
            if name not in self.available():
                raise UnknownModel(f"unknown model {name!r} (available: {', '.join(self.available()) or 'none'})")
            self.load_name(name)
        return self._loaded[name]

    def info(self, name: str) -> dict[str, Any]:
        m = self.model(name)
        man = m.bundle.manifest
        return {"name": man.name, "version": man.version, "task": man.task, "tasks": m.tasks, "format": man.format,
                "recipe": man.recipe, "profile": man.profile, "providers": list(m.session.providers),
                "threads": m.session.threads.threads}

    # -- generation ---------------------------------------------------------------
    def check(self, model: str | None, task: str | None, params: dict[str, Any]) -> dict[str, Any] | None:
        """What :meth:`stream` would refuse before running, for a front end to answer before it
        queues a request: an unknown model, a task it does not serve, parameters out of range.
        Returns the checked parameters of a loaded model; None for one installed but not yet
        loaded (it loads on the worker, and :meth:`stream` checks it there)."""
        if model is None:
            raise BadRequest("'model' is required")
        m = self._loaded.get(model)
        if m is None:
            if model not in self.available():
                raise UnknownModel(f"unknown model {model!r} (available: {', '.join(self.available()) or 'none'})")
            return None
        runner = m.runner(task)
        return validate_params(runner.task, params, m.defaults if runner is m.task else None)

    def stream(self, model: str, cancel: CancelToken | None = None, *, owner: str = "",
               task: str | None = None, **params: Any) -> Iterator[Event]:
        """Validate, then run; yields Token/Progress events and one Result. ``owner`` is whose
        chat ``session`` ids and cached prompt prefixes these are (the service passes the
        client's reply topic, HTTP a hash of the token); ``task``
        picks one the model also serves (an image generator's video-generation), default its own."""
        m = self.model(model)
        runner = m.runner(task)
        checked = validate_params(runner.task, params, m.defaults if runner is m.task else None)
        checked["session_owner"] = owner  # whose sessions and reusable prefixes these are
        return runner.stream(checked, cancel or CancelToken())

    def generate(self, model: str, cancel: CancelToken | None = None, *, owner: str = "",
                 task: str | None = None, **params: Any) -> Result:
        result = None
        for event in self.stream(model, cancel, owner=owner, task=task, **params):
            if isinstance(event, Result):
                result = event
        if result is None:  # every task ends with a Result: a task that does not is our bug
            raise RequestError(f"{model}: generation produced no result")  # code "internal"
        return result

    def close(self) -> None:
        for name in list(self._loaded):
            self.unload(name)

    def __enter__(self) -> "Runtime":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
