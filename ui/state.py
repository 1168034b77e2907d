"""State of the Predict, Model and Quality tabs: one small object per tab, each reading through the store."""
from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

import param

from predmesh import errors
from ui import form
from ui.feed import Feed, Query
from ui.store import Notice, Offline, Store, describe

log = logging.getLogger(__name__)

BATCH_RUNS = 10             # batch pipeline runs listed on the Quality tab
RELOAD_TIMEOUT_S = 60.0     # a reload loads, verifies and warms a model: allow it more than a read


class PredictState(param.Parameterized):
    """The last prediction made from this page and what to tell the user about it."""

    prediction = param.Parameter(None, doc="the last Prediction made from this page")
    notice = param.ClassSelector(class_=Notice, default=Notice())
    busy = param.Boolean(False)

    def __init__(self, store: Store, after_predict: Callable[[], None], **params):
        super().__init__(**params)
        self._store = store
        self._after_predict = after_predict

    def clear(self) -> None:
        self.param.update(prediction=None, notice=Notice())

    async def predict(self, values: Mapping[str, object], version: str = "") -> None:
        """Score one row with the selected model; `version` ("" = whatever serves) must be the serving one.

        `values` are the form's (ui.form.row): a number, a category, a boolean or None (missing) per feature."""
        info = self._store.info
        if info is None:
            self.notice = Notice("error", "No model is loaded yet; wait for the server to answer.")
            return
        try:
            features = form.row(form.fields(info.features), values)
        except form.Incomplete as exc:
            self.notice = Notice("error", str(exc))
            return
        if version and version != info.version:
            self.notice = Notice(
                "error", f"Version {version} of {info.name} is not serving: the server answers with its serving "
                         f"version ({info.version}) only. Reload {version} in the Model tab first, or choose "
                         "'serving'.")
            return
        self.busy = True
        try:
            prediction = await self._store.call("predict", info.name, features)
        except Offline as exc:
            self.notice = Notice("error", f"Not scored: the server cannot be reached ({exc}).")
            return
        except errors.InvalidArgument as exc:
            self.notice = Notice("error", f"The server refused this input: {exc.message}")
            return
        except errors.PredmeshError as exc:
            self.notice = Notice("error", f"Not scored: {describe(exc)}")
            return
        finally:
            self.busy = False
        self.prediction = prediction
        self.notice = Notice("success", f"{prediction.label} (model {prediction.model} version "
                                        f"{prediction.model_version})")
        self._after_predict()


class ModelState(param.Parameterized):
    """Stored versions of the selected model (needs the typed token) and the outcome of a reload."""

    versions = param.List([], doc="every stored version of the selected model (needs a token)")
    versions_note = param.String("")
    # the fleet's desired state with its canaries (GetDesiredState: running one's figures now, decisions with
    # theirs); None: not read (no token, or the server has no database)
    desired = param.Parameter(None)
    notice = param.ClassSelector(class_=Notice, default=Notice())
    busy = param.Boolean(False)

    def __init__(self, store: Store, after_reload: Callable[[], Awaitable[None]], **params):
        super().__init__(**params)
        self._store = store
        self._after_reload = after_reload
        self.versions_note = self._no_token_note()

    @staticmethod
    def _no_token_note() -> str:
        return ("Listing every version needs the admin or read-only token (ListModelVersions): type it above. "
                "The dashboard holds it for this browser session only and clears it from the page.")

    async def set_token(self, token: str) -> None:
        """Use this token for admin calls from now on (nothing changes when it is the one already in use)."""
        if not self._store.set_token(token or ""):
            return
        self.notice = Notice()
        await self.load_versions()

    async def load_versions(self) -> None:
        store = self._store
        if not store.has_token:
            self.versions, self.versions_note = [], self._no_token_note()
            self.desired = None  # read with the token: forgotten with it
            return
        if not store.model:
            return
        try:
            versions = await store.admin("list_model_versions", store.model)
        except Offline as exc:
            self.versions_note = f"Versions not loaded: the server cannot be reached ({exc})."
            return
        except (errors.Unauthenticated, errors.PermissionDenied) as exc:
            self.versions, self.versions_note = [], f"The token was refused: {exc.message}"
            return
        except errors.PredmeshError as exc:
            self.versions_note = f"Versions not loaded: {describe(exc)}"
            return
        self.versions = list(versions)
        self.versions_note = f"{len(versions)} stored versions of {store.model}, newest first."
        await self.load_desired()

    async def load_desired(self) -> None:
        """The fleet's desired state and canaries of the selected model (None when the server has none)."""
        store = self._store
        if not store.has_token or not store.model:
            self.desired = None
            return
        try:
            self.desired = await store.admin("get_desired_state", store.model)
        except (Offline, errors.PredmeshError):
            self.desired = None  # no database (FAILED_PRECONDITION), unreachable: the view says nothing of a fleet

    async def reload(self, version: str = "") -> None:
        """Roll the selected model to `version` (newest when "") through the admin API with the typed token."""
        store = self._store
        target = version or "the newest version"
        if not store.model:
            return
        self.busy = True
        log.info("reload of model %s to %s requested from the dashboard", store.model, target)
        try:
            result = await store.admin("reload_model", store.model, version, timeout=RELOAD_TIMEOUT_S)
        except Offline as exc:
            self.notice = Notice("error", f"Reload not sent: the server cannot be reached ({exc}).")
            return
        except errors.Unauthenticated as exc:  # without a typed token the server sees none: the UI holds none
            what = "the admin token was not accepted" if store.has_token else \
                "type the admin token first (the dashboard has no admin credential of its own)"
            self.notice = Notice("error", f"Reload refused by the server: {what} ({exc.message}).")
            return
        except errors.PermissionDenied as exc:
            self.notice = Notice("error", f"Reload refused: {exc.message}.")
            return
        except errors.FailedPrecondition as exc:
            serving = store.info.version if store.info else "the previous version"
            self.notice = Notice("error", f"Reload to {target} refused by the server; {serving} still "
                                          f"serves. Reason: {exc.message}")
            return
        except errors.NotFound as exc:
            self.notice = Notice("error", f"Reload refused: {exc.message}")
            return
        except errors.PredmeshError as exc:
            self.notice = Notice("error", f"Reload failed: {describe(exc)}")
            return
        finally:
            self.busy = False
        was = result.previous_version or "none"
        self.notice = Notice("success", f"Reloaded {result.model.name}: version {result.model.version} now "
                                        f"serves (was {was}).")
        await self._after_reload()
        await self.load_versions()


class QualityState(param.Parameterized):
    """Quality per version of the selected model (from every recorded true label) and its last batch runs."""

    quality = param.List([], doc="VersionQuality of the selected model's versions (all time)")
    quality_loaded = param.Boolean(False, doc="the quality shown was loaded (an empty list then means none)")
    quality_note = param.ClassSelector(class_=Notice, default=Notice(), doc="loading / slow / failed")
    batch_runs = param.List([], doc="the selected model's last batch pipeline runs (ListBatchRuns)")
    batch_loaded = param.Boolean(False)
    batch_note = param.ClassSelector(class_=Notice, default=Notice(), doc="loading / slow / failed")

    def __init__(self, store: Store, **params):
        super().__init__(**params)
        self._store = store

    def queries(self) -> list[Query]:
        model = self._store.model
        if not model:
            return []
        return [Query.of("get_stats", model=model), Query.of("list_batch_runs", model=model, page_size=BATCH_RUNS)]

    def show(self, feed: Feed, now: float) -> None:
        """The selected model's quality and runs as the feed holds them (nothing of another model)."""
        queries = self.queries()
        if not queries:
            return
        stats, runs = (feed.load(q) for q in queries)
        quality = sorted((q for q in stats.value.quality if q.model == self._store.model),
                         key=lambda q: q.model_version) if stats.loaded else []
        batch = list(runs.value.items) if runs.loaded else []
        updates = {"quality_loaded": stats.loaded, "batch_loaded": runs.loaded,
                   "quality_note": Notice(*stats.note(queries[0].rpc, now)),
                   "batch_note": Notice(*runs.note(queries[1].rpc, now))}
        if quality != self.quality:
            updates["quality"] = quality
        if batch != self.batch_runs:
            updates["batch_runs"] = batch
        self.param.update(**{k: v for k, v in updates.items() if getattr(self, k) != v})
