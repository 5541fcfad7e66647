"""Build touchstream's Grafana dashboards as code (Grafana's foundation SDK).

    python deploy/grafana/build.py            # writes deploy/grafana/dashboards/*.json
    python deploy/grafana/build.py --check    # exit 1 if the committed JSON is stale

The generated JSON is committed (Grafana provisions it from files, see
``deploy/grafana/provisioning/``); ``tests/deploy/test_grafana.py`` regenerates it and
compares, and runs every PromQL expression in it against a live Prometheus.

Needs ``grafana-foundation-sdk`` (the Grafana 11.6 builders, zero dependencies):
``pip install 'grafana-foundation-sdk==1769699379!11.6.0'``. The odd version is the
SDK's own scheme (an epoch per build, then the Grafana version it targets).

Conventions the tests rely on: every query uses the ``$datasource`` variable;
variables appear as ``$name`` (never ``[[name]]``); regex matchers (``=~"$channel"``)
take the "All" value ``.*``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import bargauge, stat, table, timeseries
from grafana_foundation_sdk.builders import prometheus as prom
from grafana_foundation_sdk.builders.common import VizLegendOptions
from grafana_foundation_sdk.builders.dashboard import (
    AnnotationQuery,
    CustomVariable,
    Dashboard,
    DatasourceVariable,
    QueryVariable,
    Row,
    ThresholdsConfig,
)
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import (
    BigValueColorMode,
    BigValueGraphMode,
    LegendDisplayMode,
    LegendPlacement,
    LineStyle,
    VizOrientation,
)
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    DataTransformerConfig,
    DynamicConfigValue,
    Threshold,
    ThresholdsMode,
    VariableOption,
    VariableRefresh,
    VariableSort,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

HERE = Path(__file__).resolve().parent
OUT = HERE / "dashboards"
DS = DataSourceRef(type_val="prometheus", uid="${datasource}")
RUNBOOK = "https://github.com/touchstream/touchstream/blob/main/docs/alerting.md"

# The scope of the score panels: one metric and window, the scope's values filtered by
# the dimension variables (a dimension not in the scope is absent, which ".*" matches).
SEL = ('job="$job", metric="$metric", window="$window", scope="$scope", '
       'channel=~"$channel", touchpoint=~"$touchpoint", segment=~"$segment", '
       'owner=~"$owner"')
VALUES = "{{channel}} {{touchpoint}} {{segment}} {{journey_type}} {{stage}} {{owner}}"
SHARES = "^(csat|outcome) "  # series names start with the metric; shares are 0-1


def query(expr: str, legend: str = "", ref: str = "A", *, instant: bool = False,
          table_format: bool = False) -> prom.Dataquery:
    """A Prometheus query on the dashboard's datasource."""
    q = prom.Dataquery().expr(expr).ref_id(ref).datasource(DS)
    if legend:
        q = q.legend_format(legend)
    if instant:
        q = q.instant()
    else:
        q = q.range()
    if table_format:
        q = q.format(PromQueryFormat.TABLE)
    return q


def steps(*pairs: tuple[float | None, str]) -> ThresholdsConfig:
    """Absolute thresholds: (None, base colour), (value, colour), ..."""
    return ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps(
        [Threshold(value=v, color=c) for v, c in pairs])


def legend_table() -> VizLegendOptions:
    return (VizLegendOptions().display_mode(LegendDisplayMode.TABLE)
            .placement(LegendPlacement.BOTTOM).show_legend(True).calcs(["lastNotNull"]))


def variable(name: str, label: str, expr: str, *, all_values: bool = False,
             current: str | None = None) -> QueryVariable:
    """A Prometheus label_values variable."""
    var = (QueryVariable(name).label(label).datasource(DS).query(expr)
           .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED).sort(VariableSort.ALPHABETICAL_ASC))
    if all_values:
        var = var.multi(True).include_all(True).all_value(".*").current(
            VariableOption(selected=True, text="All", value="$__all"))
    elif current is not None:
        var = var.current(VariableOption(selected=True, text=current, value=current))
    return var


def organize(exclude: list[str], rename: dict[str, str]) -> DataTransformerConfig:
    return DataTransformerConfig(id_val="organize", options={
        "excludeByName": {name: True for name in exclude}, "renameByName": rename})


def score_rows(dash: Dashboard) -> Dashboard:
    """Scores against target for the chosen metric, window and scope."""
    shares = [DynamicConfigValue(id_val="unit", value="percentunit")]
    dashed = [DynamicConfigValue(id_val="custom.lineStyle",
                                 value=LineStyle(fill="dash", dash=[6, 4])),
              DynamicConfigValue(id_val="custom.lineWidth", value=1)]
    hidden_labels = ["Time", "__name__", "job", "instance", "service", "metric", "window",
                     "scope"]
    rename = {"Value #A": "score", "Value #B": "95% low", "Value #C": "95% high",
              "Value #D": "n", "Value #E": "target", "Value #F": "gap"}
    return (
        dash.with_row(Row("Scores against target: $metric, $window, by $scope"))
        .with_panel(
            table.Panel().title("Scores by $scope: score, 95% interval, n, target, gap")
            .description("One row per value of the scope. Shares (CSAT, resolution) are "
                         "0-1, NPS is in points, CES and ratings are means. The gap is "
                         "score minus the target of the segment or offering.")
            .datasource(DS).span(24).height(9).unit("none").decimals(3)
            .with_target(query(f"touchstream_score{{{SEL}}}", ref="A", instant=True,
                               table_format=True))
            .with_target(query(f"touchstream_score_lower_bound{{{SEL}}}", ref="B",
                               instant=True, table_format=True))
            .with_target(query(f"touchstream_score_upper_bound{{{SEL}}}", ref="C",
                               instant=True, table_format=True))
            .with_target(query(f"touchstream_score_responses{{{SEL}}}", ref="D",
                               instant=True, table_format=True))
            .with_target(query(f"touchstream_score_target{{{SEL}}}", ref="E",
                               instant=True, table_format=True))
            .with_target(query(f"touchstream_score_gap{{{SEL}}}", ref="F",
                               instant=True, table_format=True))
            .with_transformation(DataTransformerConfig(id_val="merge", options={}))
            .with_transformation(organize(hidden_labels, rename))
            .override_by_name("n", [DynamicConfigValue(id_val="decimals", value=0)])
            .override_by_name("gap", [
                DynamicConfigValue(id_val="custom.cellOptions", value={"type": "color-text"}),
                DynamicConfigValue(id_val="thresholds", value=steps(
                    (None, "red"), (0, "green")).build())])
        )
        .with_panel(
            timeseries.Panel().title("Score and target")
            .description("Each value of the scope (solid) and its target (dashed).")
            .datasource(DS).span(12).height(9).unit("none").decimals(3).legend(legend_table())
            .with_target(query(f"touchstream_score{{{SEL}}}", f"$metric {VALUES}", "A"))
            .with_target(query(f"touchstream_score_target{{{SEL}}}",
                               f"$metric target {VALUES}", "B"))
            .override_by_regexp(SHARES, shares)
            .override_by_regexp("^\\S+ target ", dashed)
        )
        .with_panel(
            timeseries.Panel().title("Score with its 95% interval")
            .description("Score (solid) between the bounds of its 95% interval (dashed): "
                         "Wilson for shares, multinomial for NPS, t for means. A wide "
                         "band is a small n, not a bad score.")
            .datasource(DS).span(12).height(9).unit("none").decimals(3).legend(legend_table())
            .with_target(query(f"touchstream_score{{{SEL}}}", f"$metric {VALUES}", "A"))
            .with_target(query(f"touchstream_score_lower_bound{{{SEL}}}",
                               f"$metric low {VALUES}", "B"))
            .with_target(query(f"touchstream_score_upper_bound{{{SEL}}}",
                               f"$metric high {VALUES}", "C"))
            .override_by_regexp(SHARES, shares)
            .override_by_regexp("^\\S+ (low|high) ", dashed)
        )
        .with_panel(
            timeseries.Panel().title("Answers behind each score (n)")
            .datasource(DS).span(12).height(8).unit("short").decimals(0).min(0)
            .legend(legend_table())
            .with_target(query(f"touchstream_score_responses{{{SEL}}}", VALUES))
        )
        .with_panel(
            bargauge.Panel().title("Gap to target, worst first")
            .description("Score minus target; red is below target.")
            .datasource(DS).span(12).height(8).unit("none").decimals(3)
            .orientation(VizOrientation.HORIZONTAL)
            .thresholds(steps((None, "red"), (0, "green")))
            .with_target(query(f"sort(touchstream_score_gap{{{SEL}}})", VALUES,
                               instant=True))
        )
    )


def alert_rows(dash: Dashboard) -> Dashboard:
    """The detector's alerts and the Prometheus alerts built on them."""
    counts = [
        ("Firing alerts (detector)", 'touchstream_alert_active{job="$job", state="firing"}',
         (1, "red")),
        ("Pending alerts (detector)", 'touchstream_alert_active{job="$job", state="pending"}',
         (1, "orange")),
        ("Pipeline stale (Prometheus)",
         'ALERTS{alertname="TouchstreamPipelineStale", alertstate="firing", job="$job"}',
         (1, "red")),
    ]
    dash = dash.with_row(Row("Alerts"))
    for title, selector, (level, colour) in counts:
        dash = dash.with_panel(
            stat.Panel().title(title).datasource(DS).span(4).height(6).unit("short").decimals(0)
            .color_mode(BigValueColorMode.BACKGROUND).graph_mode(BigValueGraphMode.NONE)
            .thresholds(steps((None, "green"), (level, colour)))
            .with_target(query(f"count({selector}) or vector(0)", instant=True))
        )
    return (
        dash.with_panel(
            timeseries.Panel().title("Alert state changes")
            .description("Changes per interval, by the state entered. Many pending -> "
                         "resolved changes without firing mean a rule close to its edge.")
            .datasource(DS).span(12).height(6).unit("short").decimals(0).min(0)
            .with_target(query('sum by (state) (increase(touchstream_alert_changes_total'
                               '{job="$job"}[$__rate_interval]))', "{{state}}"))
        )
        .with_panel(
            table.Panel().title("Open alerts (GET /v1/alerts has the evidence)")
            .description(f"Pending and firing alerts of the detector. Runbooks: {RUNBOOK}")
            .datasource(DS).span(24).height(8).unit("none")
            .with_target(query('touchstream_alert_active{job="$job"}', instant=True,
                               table_format=True))
            .with_transformation(organize(
                ["Time", "Value", "__name__", "job", "instance", "service"], {}))
        )
        .with_panel(
            table.Panel().title("Why did it drop?")
            .description("For each open drop alert: the cell that explains most of the drop "
                         "(lead), the share of the drop it explains (above 100%: the rest "
                         "rose), and the effect: rate (its own score fell), mix (who "
                         "answers changed), rate+mix, spread (no single value dominates) "
                         "or journey (between touchpoints, not in one). The full "
                         "decomposition is in GET /v1/alerts/{id}. Runbook: "
                         f"{RUNBOOK}#reading-the-attribution")
            .datasource(DS).span(24).height(7).unit("percentunit").decimals(0)
            .with_target(query('max without (instance) (touchstream_alert_attribution_ratio'
                               '{job="$job"})', instant=True, table_format=True))
            .with_transformation(organize(
                ["Time", "__name__", "job", "instance", "service"],
                {"Value": "share of the drop"}))
        )
    )


def pipeline_rows(dash: Dashboard) -> Dashboard:
    """Is the data flowing, fresh and on time?"""
    return (
        dash.with_row(Row("Pipeline health"))
        .with_panel(
            timeseries.Panel().title("Events processed by the engine")
            .datasource(DS).span(8).height(8).unit("ops").min(0)
            .with_target(query('sum by (outcome) (rate(touchstream_events_total{job="$job"}'
                               '[$__rate_interval]))', "{{outcome}}"))
        )
        .with_panel(
            timeseries.Panel().title("Events received over HTTP")
            .description("rejected = sent to the dead letters (GET /v1/dead-letters).")
            .datasource(DS).span(8).height(8).unit("ops").min(0)
            .with_target(query('sum by (outcome) (rate(touchstream_ingest_events_total'
                               '{job="$job"}[$__rate_interval]))', "{{outcome}}"))
        )
        .with_panel(
            stat.Panel().title("Rejected share (15 min)")
            .description("TouchstreamDeadLetterSurge fires above 5%.")
            .datasource(DS).span(4).height(8).unit("percentunit").decimals(1)
            .color_mode(BigValueColorMode.BACKGROUND).no_value("no traffic")
            .thresholds(steps((None, "green"), (0.05, "red")))
            .with_target(query('touchstream:ingest_rejected:ratio_rate15m{job="$job"}',
                               instant=True))
        )
        .with_panel(
            stat.Panel().title("Service up")
            .datasource(DS).span(4).height(8).unit("bool_yes_no").decimals(0)
            .color_mode(BigValueColorMode.BACKGROUND)
            .thresholds(steps((None, "red"), (1, "green")))
            .with_target(query('min(up{job="$job"})', instant=True))
        )
        .with_panel(
            timeseries.Panel().title("Freshness")
            .description("Age of the newest event's event time, and of the exported "
                         "scoreboard (refreshed every TOUCHSTREAM_METRICS_REFRESH_SECONDS).")
            .datasource(DS).span(8).height(8).unit("s").min(0)
            .with_target(query('time() - max(touchstream_watermark_timestamp_seconds'
                               '{job="$job"})', "newest event", "A"))
            .with_target(query('time() - max by (instance) (touchstream_scoreboard_refreshed'
                               '_timestamp_seconds{job="$job"})', "scoreboard {{instance}}",
                               "B"))
        )
        .with_panel(
            timeseries.Panel().title("Consumer lag (Kafka runner)")
            .description("Events behind the touchpoints topic per partition; empty in "
                         "embedded mode.")
            .datasource(DS).span(8).height(8).unit("short").min(0)
            .with_target(query('sum by (partition) (touchstream_consumer_lag{job="$job"})',
                               "partition {{partition}}"))
        )
        .with_panel(
            timeseries.Panel().title("Latency (p50, p99)")
            .datasource(DS).span(8).height(8).unit("s").min(0)
            .with_target(query(
                'histogram_quantile(0.99, sum by (le) (rate(touchstream_ingest_batch_seconds'
                '_bucket{job="$job"}[$__rate_interval])))', "ingest batch p99", "A"))
            .with_target(query(
                'histogram_quantile(0.5, sum by (le) (rate(touchstream_ingest_batch_seconds'
                '_bucket{job="$job"}[$__rate_interval])))', "ingest batch p50", "B"))
            .with_target(query(
                'histogram_quantile(0.99, sum by (le) (rate(touchstream_merge_seconds_bucket'
                '{job="$job"}[$__rate_interval])))', "scoreboard merge p99", "C"))
        )
        .with_panel(
            timeseries.Panel().title("Engine state")
            .description("Series kept, open journeys and customers; values folded into "
                         "'other' past a dimension's cap (per second).")
            .datasource(DS).span(12).height(8).unit("short").min(0)
            .with_target(query('sum(touchstream_series{job="$job"})', "series", "A"))
            .with_target(query('sum(touchstream_open_journeys{job="$job"})', "open journeys",
                               "B"))
            .with_target(query('sum(touchstream_customers{job="$job"})', "customers", "C"))
        )
        .with_panel(
            timeseries.Panel().title("Dimension values folded into 'other'")
            .datasource(DS).span(12).height(8).unit("ops").min(0)
            .with_target(query('sum by (dimension) (rate(touchstream_dimension_folded_total'
                               '{job="$job"}[$__rate_interval]))', "{{dimension}}"))
        )
    )


def overview() -> Dashboard:
    """The touchstream overview: scores against targets, alerts, pipeline health."""
    dims = 'touchstream_score{job="$job", metric="$metric", window="$window", scope="$scope"}'
    dash = (
        Dashboard("touchstream overview")
        .uid("touchstream-overview")
        .description("Customer satisfaction scores against their targets, the detector's "
                     "alerts and the pipeline's health. Generated by deploy/grafana/build.py.")
        .tags(["touchstream", "generated"])
        .editable()
        .refresh("30s")
        .time("now-6h", "now")
        .timezone("browser")
        .annotation(AnnotationQuery().name("touchstream alerts firing").datasource(DS)
                    .enable(True).icon_color("red")
                    .expr('ALERTS{alertname=~"Touchstream.+", alertstate="firing", '
                          'job="$job"}'))
        .with_variable(DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
        .with_variable(variable("job", "Job", "label_values(touchstream_score, job)",
                                current="touchstream"))
        .with_variable(variable("metric", "Metric",
                                'label_values(touchstream_score{job="$job"}, metric)',
                                current="csat"))
        .with_variable(CustomVariable("window").label("Window").values("15m,1h,24h,day")
                       .current(VariableOption(selected=True, text="1h", value="1h")))
        .with_variable(variable("scope", "Scope",
                                'label_values(touchstream_score{job="$job", metric="$metric"}'
                                ', scope)', current="channel"))
    )
    for dim in ("channel", "touchpoint", "segment", "owner"):
        dash = dash.with_variable(variable(dim, dim.capitalize(),
                                           f"label_values({dims}, {dim})", all_values=True))
    return pipeline_rows(alert_rows(score_rows(dash)))


DASHBOARDS = {"touchstream.json": overview}


def render(build: Any) -> str:
    """The dashboard as stable, pretty JSON (what gets committed)."""
    model = build().build()
    data = json.loads(json.dumps(model, cls=JSONEncoder))
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate the Grafana dashboards.")
    parser.add_argument("--check", action="store_true",
                        help="only check that the committed files are up to date")
    args = parser.parse_args(argv)
    stale = []
    for name, build in DASHBOARDS.items():
        path = OUT / name
        text = render(build)
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        sys.stdout.write(f"wrote {path.relative_to(HERE.parent.parent)}\n")
    if stale:
        sys.stderr.write(f"stale: {', '.join(stale)}; run python deploy/grafana/build.py\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
