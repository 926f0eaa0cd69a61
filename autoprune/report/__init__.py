"""Reports people look at: Pareto plot, schedule plot, search progress, knob importance,
the equal-latency comparison table, ``report.md`` and a self-contained ``report.html``.

``autoprune report runs/<study>`` (and the end of ``autoprune search``) writes, atomically,
into ``runs/<study>/``::

    report.md, report.html, trials.csv
    figures/pareto.png, figures/schedules.png, figures/history.png, figures/importance.png

One module per job; each figure is *computed* into a small typed object by a
``*_data`` function (what the tests check) and *drawn* by a thin ``draw_*`` function:

- :mod:`.context`    the study read once: settings, the trials frame (from
  :func:`autoprune.search.export.trials_frame`), baseline, references, labels and units;
- :mod:`.pareto`     score vs latency (and speedup), budget, references, labelled front;
- :mod:`.labels`     non-overlapping label placement (pure geometry);
- :mod:`.schedules`  keep ratio vs layer with the layer kinds along depth;
- :mod:`.history`    score per trial and the hypervolume of the feasible front;
- :mod:`.importance` scorer-knob importance (Optuna's evaluators), or a note why not;
- :mod:`.tables`     header facts, exported schedules vs references at equal latency;
- :mod:`.document`   one block list rendered to Markdown and to HTML;
- :mod:`.build`      the orchestration: :func:`write_report`, :func:`report_run_dir`.

Importing this package is light: matplotlib, pandas and Optuna are imported when a
report is made.
"""

from __future__ import annotations

__all__ = ["write_report", "report_run_dir", "ReportResult", "FIGURES"]


def __getattr__(name):
    if name in ("write_report", "report_run_dir", "ReportResult", "FIGURES"):
        from . import build

        return getattr(build, name)
    raise AttributeError(f"module 'autoprune.report' has no attribute {name!r}")
