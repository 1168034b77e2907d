"""Layout of the dashboard: widgets and panes bound reactively to the session's state. Views never call the server."""
from __future__ import annotations

import panel as pn

from ui import charts
from ui.form_view import FeatureForm
from ui.history_view import history_view
from ui.panes import notice_pane, pct, text
from ui.session import Session


# -- header -------------------------------------------------------------------------------------------------------
def _names(models) -> list[str]:
    return [m.name for m in models]


def _status(problem: str, updated_at, target: str) -> str:
    when = updated_at.strftime("%H:%M:%S UTC") if updated_at else "not yet"
    state = "**Server unreachable**" if problem else "Connected"
    return f"{state} · server {text(target)} · updated {when}"


def header(session: Session, title: str) -> pn.Column:
    store = session.store
    model_select = pn.widgets.Select(label="Model", value=store.param.model, width=220, margin=(5, 10),
                                     options=pn.bind(_names, store.param.models))
    pn.bind(session.select_model, model_select, watch=True)
    status = pn.pane.Markdown(pn.bind(_status, store.param.problem, store.param.updated_at, store.target),
                              margin=(18, 10, 0, 10))
    banner = pn.pane.Alert(pn.bind(text, store.param.problem), alert_type="danger",
                           visible=pn.bind(bool, store.param.problem), margin=(5, 10))
    heading = pn.pane.Markdown(f"## {text(title)} dashboard", margin=(5, 10))
    return pn.Column(pn.Row(heading, model_select, status), banner, sizing_mode="stretch_width")


# -- predict ------------------------------------------------------------------------------------------------------
PROBABILITY_DIGITS = 6       # decimals of the probabilities shown under a prediction


def _version_options(info, versions) -> dict[str, str]:
    serving = info.version if info else ""
    others = [v.version for v in versions if v.version != serving]
    return {f"serving ({serving})" if serving else "serving": "", **{v: v for v in others}}


def _prediction_text(p, info=None) -> str:
    if p is None:
        return ""
    classes = [c for c in (info.classes if info else ()) if c in p.probabilities]
    classes += sorted(set(p.probabilities) - set(classes))
    shares = " · ".join(f"{text(c)} {p.probabilities[c]:.{PROBABILITY_DIGITS}f}" for c in classes)
    return (f"### Predicted label: {text(p.label)}\n\nmodel **{text(p.model)}** version "
            f"**{text(p.model_version)}** · prediction id {text(p.prediction_id)} · {p.latency_ms:.2f} ms on the "
            f"server\n\nprobabilities: {shares}")


def predict_view(session: Session) -> pn.Column:
    store, state = session.store, session.predict
    form = FeatureForm()
    form.update(store.info)
    pn.bind(form.update, store.param.info, watch=True)
    sample = pn.widgets.Button(label="Random row", width=120)
    sample.on_click(lambda _: form.fill_random())
    version = pn.widgets.Select(label="Model version", width=220,
                                options=pn.bind(_version_options, store.param.info, session.model.param.versions))
    button = pn.widgets.Button(label="Predict", color="primary", width=120, loading=state.param.busy)
    fig, source = charts.probability_chart()

    def draw(prediction) -> None:
        if prediction is not None:
            charts.set_probabilities(fig, source, prediction.probabilities, store.info.classes if store.info else ())

    pn.bind(draw, state.param.prediction, watch=True)

    async def submit(_):
        await state.predict(form.values(), version.value or "")

    button.on_click(submit)
    return pn.Column(
        pn.pane.Markdown("Fill in the features (defaults: the training mean, the most common category) and "
                         "predict, or draw a random row from the training profile. The form follows the selected "
                         "model's schema; an empty number is a missing value where the model accepts one."),
        version, form.panel, pn.Row(button, sample), notice_pane(state.param.notice),
        pn.pane.Markdown(pn.bind(_prediction_text, state.param.prediction, store.param.info),
                         sizing_mode="stretch_width"),
        pn.pane.Bokeh(fig, sizing_mode="stretch_width", visible=state.param.prediction.rx.is_not(None)),
        sizing_mode="stretch_width")


# -- model card and reload ----------------------------------------------------------------------------------------
def _card(info) -> str:
    if info is None:
        return "No model loaded."
    created = info.created_at.strftime("%Y-%m-%d %H:%M:%S UTC") if info.created_at else "unknown"
    lines = [f"### {text(info.name)} · serving version {text(info.version)}", "",
             "| | |", "|---|---|",
             f"| estimator | {text(info.estimator)} (scikit-learn {text(info.sklearn_version)}) |",
             f"| created at | {created} |",
             f"| sha256 | {text(info.sha256)} |",
             f"| features | {text(', '.join(info.feature_names))} |",
             f"| classes | {text(', '.join(info.classes))} |"]
    lines += [f"| {text(name)} | {value:.4f} |" for name, value in sorted(info.metrics.items())]
    return "\n".join(lines)


def _versions_table(versions) -> str:
    if not versions:
        return ""
    lines = ["| version | serving | estimator | created at (UTC) | holdout accuracy | sha256 |",
             "|---|---|---|---|---|---|"]
    for v in versions:
        created = v.created_at.strftime("%Y-%m-%d %H:%M:%S") if v.created_at else ""
        acc = v.metrics.get("holdout_accuracy")
        lines.append(f"| {text(v.version)} | {'yes' if v.serving else ''} | {text(v.estimator)} | {created} | "
                     f"{'' if acc is None else f'{acc:.3f}'} | {text(v.sha256[:12])} |")
    return "\n".join(lines)


def _fleet_table(desired) -> str:
    """The fleet's desired version and its canaries (newest first) with the figures of each decision."""
    if desired is None or not desired.version:
        return ""
    lines = [f"**Fleet**: every replica serves version {text(desired.version)}"
             f"{' (pinned)' if desired.pinned else ''}, set by {text(desired.updated_by)}"
             + (f" ({text(desired.reason)})" if desired.reason else "")
             + (f"; canary {text(desired.candidate)} takes {desired.candidate_share:.0%} of the calls"
                if desired.candidate else "")]
    if desired.canaries:
        lines += ["", ("| canary | status | share | elapsed | candidate accuracy | serving accuracy | errors | "
                  "p99 ms (cand. / serv.) | agreement | decision |"), "|---|---|---|---|---|---|---|---|---|---|"]

        def acc(side) -> str:
            return "–" if side.accuracy is None else f"{side.accuracy:.3f} ({side.feedback})"

        for run in desired.canaries:
            c, s = run.candidate_side, run.serving
            agreement = f"{run.agreed / run.compared:.3f} ({run.compared})" if run.compared else "–"
            lines.append(f"| {text(run.candidate)} vs {text(run.baseline)} | {text(run.status)} | {run.share:.0%} | "
                         f"{run.elapsed_s:.0f} s | {acc(c)} | {acc(s)} | {c.errors}/{c.calls} | "
                         f"{c.p99_ms:.1f} / {s.p99_ms:.1f} | {agreement} | {text(run.summary)} |")
    return "\n".join(lines)


def _reload_options(versions) -> dict[str, str]:
    return {"newest version": "", **{v.version: v.version for v in versions}}


def model_view(session: Session) -> pn.Column:
    store, state = session.store, session.model
    token = pn.widgets.PasswordInput(label="Admin or read-only token (held for this session, not in the page)",
                                     placeholder="paste the token, then press Enter", width=380)
    forget = pn.widgets.Button(label="Forget token", width=120, margin=(26, 10, 0, 10))
    target = pn.widgets.Select(label="Reload to", width=200, options=pn.bind(_reload_options, state.param.versions))
    reload_button = pn.widgets.Button(label="Reload", color="warning", width=120, loading=state.param.busy)

    async def take_token(*_) -> None:
        """The typed token leaves the page at once (any script in the page could read an input's value and its
        Bokeh model); the session's store holds it on the server from then on."""
        typed = token.value_input or token.value  # value_input: typed but maybe not yet entered
        if typed:
            token.param.update(value="", value_input="")
            await state.set_token(typed)

    async def do_reload(_):
        await take_token()
        await state.reload(target.value or "")

    async def do_forget(_):
        token.param.update(value="", value_input="")
        await state.set_token("")

    refresh = pn.widgets.Button(label="Refresh fleet and canaries", width=220)

    async def do_refresh(_):
        await take_token()
        await state.load_desired()

    refresh.on_click(do_refresh)
    token.param.watch(take_token, "value")
    reload_button.on_click(do_reload)
    forget.on_click(do_forget)
    return pn.Column(pn.pane.Markdown(pn.bind(_card, store.param.info), sizing_mode="stretch_width"),
                     pn.pane.Markdown("---", sizing_mode="stretch_width"), pn.Row(token, forget),
                     pn.pane.Markdown(pn.bind(text, state.param.versions_note)),
                     pn.pane.Markdown(pn.bind(_versions_table, state.param.versions), sizing_mode="stretch_width"),
                     pn.pane.Markdown(pn.bind(_fleet_table, state.param.desired), sizing_mode="stretch_width"),
                     refresh,
                     pn.Row(target, reload_button), notice_pane(state.param.notice),
                     sizing_mode="stretch_width")


# -- quality ------------------------------------------------------------------------------------------------------
def _quality_table(quality, loaded: bool, info, model: str) -> str:
    if not loaded:
        return ""
    if not quality:
        return f"No feedback recorded for {text(model) or 'this model'} yet."
    serving = info.version if info else ""
    lines = ["| version | feedback | accuracy | macro precision | macro recall |", "|---|---|---|---|---|"]
    for q in quality:
        mark = " (serving)" if q.model_version == serving else ""
        lines.append(f"| {text(q.model_version)}{mark} | {q.feedback_count} | {pct(q.accuracy)} | "
                     f"{pct(q.macro_precision)} | {pct(q.macro_recall)} |")
    return "\n".join(lines)


def _batch_table(runs, loaded: bool, model: str) -> str:
    if not loaded:
        return ""
    if not runs:
        return f"No batch run recorded for {text(model) or 'this model'}."
    lines = [("| started (UTC) | ended | run | attempt | status | version | rows | rejected | accuracy | seconds "
              "| input | message or error |"),
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:  # every attempt of a run is its own line
        started = r.started_at.strftime("%Y-%m-%d %H:%M:%S") if r.started_at else ""
        ended = r.finished_at.strftime("%Y-%m-%d %H:%M:%S") if r.finished_at else ""
        accuracy = "" if r.accuracy is None else pct(r.accuracy)
        lines.append(f"| {started} | {ended} | {text(r.run_key)} | {r.attempt} | {text(r.status)} | "
                     f"{text(r.model_version)} | {r.rows} | {r.rejected} | {accuracy} | {r.duration_seconds:.1f} | "
                     f"{text(r.input[-80:])} | {text(r.message[:120])} |")
    return "\n".join(lines)


def quality_view(session: Session) -> pn.Column:
    store, state = session.store, session.quality
    return pn.Column(
        pn.pane.Markdown("Quality per model version from every recorded true label (the dashboard's feedback, "
                         "the API's and the batch pipeline's). Submit feedback from the History tab."),
        notice_pane(state.param.quality_note),
        pn.pane.Markdown(pn.bind(_quality_table, state.param.quality, state.param.quality_loaded, store.param.info,
                                 store.param.model), sizing_mode="stretch_width"),
        pn.pane.Markdown("#### Last batch pipeline runs"),
        notice_pane(state.param.batch_note),
        pn.pane.Markdown(pn.bind(_batch_table, state.param.batch_runs, state.param.batch_loaded, store.param.model),
                         sizing_mode="stretch_width"),
        sizing_mode="stretch_width")


def dashboard(session: Session, title: str) -> pn.Column:
    tabs = pn.Tabs(("Predict", predict_view(session)), ("History", history_view(session)),
                   ("Model", model_view(session)), ("Quality", quality_view(session)), dynamic=True,
                   sizing_mode="stretch_width")
    return pn.Column(header(session, title), tabs, sizing_mode="stretch_width", max_width=1400)
