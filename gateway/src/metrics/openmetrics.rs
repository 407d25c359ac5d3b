//! The OpenMetrics exposition (`Accept: application/openmetrics-text`), with exemplars: the
//! `prometheus` crate has neither, so this writes the gathered families itself and adds, on the
//! buckets of the latency histograms, the trace id of the last sampled request that fell in
//! each bucket, so a Grafana panel can jump from a slow bucket to its trace.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;

use prometheus::proto::{LabelPair, MetricFamily, MetricType};

/// The content type answered.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Whether an `Accept` header asks for OpenMetrics.
pub fn wanted(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("application/openmetrics-text"))
}

/// One exemplar: the trace, the observed value, when (Unix seconds).
#[derive(Debug, Clone)]
struct Exemplar {
    trace_id: String,
    value: f64,
    at: f64,
}

/// The last exemplar per histogram series and bucket. Series are bounded by their labels
/// (config names and enums), buckets by the histogram's definition.
#[derive(Default)]
pub struct Exemplars {
    slots: Mutex<HashMap<String, Vec<Option<Exemplar>>>>,
}

impl Exemplars {
    /// Keeps `trace_id` as the exemplar of the bucket of `bounds` that `value` falls in, on
    /// the series of `family` with `labels` (name, value pairs in any order).
    pub fn record(
        &self,
        family: &str,
        labels: &[(&str, &str)],
        bounds: &[f64],
        value: f64,
        trace_id: String,
    ) {
        let index = bounds
            .iter()
            .position(|b| value <= *b)
            .unwrap_or(bounds.len());
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let key = series_key(family, labels.iter().copied());
        let Ok(mut slots) = self.slots.lock() else {
            return;
        };
        let slot = slots
            .entry(key)
            .or_insert_with(|| vec![None; bounds.len() + 1]);
        if let Some(s) = slot.get_mut(index) {
            *s = Some(Exemplar {
                trace_id,
                value,
                at,
            });
        }
    }

    fn get(&self, key: &str, bucket: usize) -> Option<Exemplar> {
        self.slots
            .lock()
            .ok()?
            .get(key)
            .and_then(|v| v.get(bucket).cloned().flatten())
    }
}

fn series_key<'a>(family: &str, labels: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut pairs: Vec<(&str, &str)> = labels.collect();
    pairs.sort_unstable();
    let mut key = family.to_string();
    for (n, v) in pairs {
        key.push('\0');
        key.push_str(n);
        key.push('=');
        key.push_str(v);
    }
    key
}

/// Writes `families` in the OpenMetrics text format, exemplars included, ending in `# EOF`.
pub fn encode(families: &[MetricFamily], exemplars: &Exemplars) -> String {
    let mut out = String::new();
    for mf in families {
        let name = mf.name();
        let (kind, base) = match mf.get_field_type() {
            // A counter's family is named without `_total`; counters named otherwise are
            // written as `unknown` so their sample names stay what dashboards use.
            MetricType::COUNTER => match name.strip_suffix("_total") {
                Some(base) => ("counter", base),
                None => ("unknown", name),
            },
            MetricType::GAUGE => ("gauge", name),
            MetricType::HISTOGRAM => ("histogram", name),
            MetricType::SUMMARY => ("summary", name),
            MetricType::UNTYPED => ("unknown", name),
        };
        let _ = writeln!(out, "# HELP {base} {}", escape(mf.help()));
        let _ = writeln!(out, "# TYPE {base} {kind}");
        for m in mf.get_metric() {
            let labels = m.get_label();
            match mf.get_field_type() {
                MetricType::COUNTER => {
                    sample(&mut out, name, labels, None, m.get_counter().get_value());
                }
                MetricType::GAUGE => {
                    sample(&mut out, name, labels, None, m.get_gauge().get_value());
                }
                // The registry has no untyped metrics today; written as they come if one appears.
                #[allow(deprecated)]
                MetricType::UNTYPED => {
                    sample(&mut out, name, labels, None, m.get_untyped().get_value());
                }
                MetricType::HISTOGRAM => {
                    let h = m.get_histogram();
                    let key = series_key(name, labels.iter().map(|l| (l.name(), l.value())));
                    let bucket_name = format!("{name}_bucket");
                    let buckets = h.get_bucket();
                    for (i, b) in buckets.iter().enumerate() {
                        let le = number(b.upper_bound());
                        sample(
                            &mut out,
                            &bucket_name,
                            labels,
                            Some(("le", &le)),
                            b.cumulative_count() as f64,
                        );
                        exemplar(&mut out, exemplars.get(&key, i));
                    }
                    if buckets.last().is_none_or(|b| b.upper_bound().is_finite()) {
                        sample(
                            &mut out,
                            &bucket_name,
                            labels,
                            Some(("le", "+Inf")),
                            h.get_sample_count() as f64,
                        );
                        exemplar(&mut out, exemplars.get(&key, buckets.len()));
                    }
                    sample(
                        &mut out,
                        &format!("{name}_sum"),
                        labels,
                        None,
                        h.get_sample_sum(),
                    );
                    sample(
                        &mut out,
                        &format!("{name}_count"),
                        labels,
                        None,
                        h.get_sample_count() as f64,
                    );
                }
                MetricType::SUMMARY => {
                    let s = m.get_summary();
                    for q in s.get_quantile() {
                        let quantile = number(q.quantile());
                        sample(
                            &mut out,
                            name,
                            labels,
                            Some(("quantile", &quantile)),
                            q.value(),
                        );
                    }
                    sample(
                        &mut out,
                        &format!("{name}_sum"),
                        labels,
                        None,
                        s.sample_sum(),
                    );
                    sample(
                        &mut out,
                        &format!("{name}_count"),
                        labels,
                        None,
                        s.sample_count() as f64,
                    );
                }
            }
        }
    }
    out.push_str("# EOF\n");
    out
}

/// Writes `name{labels} value` (the newline is left to [`exemplar`]'s caller or added here).
fn sample(
    out: &mut String,
    name: &str,
    labels: &[LabelPair],
    extra: Option<(&str, &str)>,
    value: f64,
) {
    out.push_str(name);
    let pairs = labels.iter().map(|l| (l.name(), l.value())).chain(extra);
    let mut first = true;
    for (n, v) in pairs {
        out.push(if first { '{' } else { ',' });
        first = false;
        let _ = write!(out, "{n}=\"{}\"", escape(v));
    }
    if !first {
        out.push('}');
    }
    let _ = write!(out, " {}", number(value));
    if extra.is_none_or(|(n, _)| n != "le") {
        out.push('\n');
    }
}

/// Ends a bucket line: ` # {trace_id="…"} value timestamp` when there is an exemplar.
fn exemplar(out: &mut String, e: Option<Exemplar>) {
    if let Some(e) = e {
        let _ = write!(
            out,
            " # {{trace_id=\"{}\"}} {} {:.3}",
            escape(&e.trace_id),
            number(e.value),
            e.at
        );
    }
    out.push('\n');
}

fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_string()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else {
        v.to_string()
    }
}

fn escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '"' => s.push_str("\\\""),
            c => s.push(c),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

    #[test]
    fn histograms_carry_the_exemplar_of_their_bucket_and_counters_their_family_name() {
        let registry = Registry::new();
        let h = HistogramVec::new(
            HistogramOpts::new("lat_seconds", "Latency \"quoted\".").buckets(vec![0.1, 1.0]),
            &["route"],
        )
        .unwrap();
        let c = IntCounterVec::new(Opts::new("reqs_total", "Requests."), &["route"]).unwrap();
        registry.register(Box::new(h.clone())).unwrap();
        registry.register(Box::new(c.clone())).unwrap();
        h.with_label_values(&["r1"]).observe(0.5);
        h.with_label_values(&["r1"]).observe(7.0);
        c.with_label_values(&["r1"]).inc();
        let ex = Exemplars::default();
        ex.record(
            "lat_seconds",
            &[("route", "r1")],
            &[0.1, 1.0],
            0.5,
            "abc".into(),
        );
        ex.record(
            "lat_seconds",
            &[("route", "r1")],
            &[0.1, 1.0],
            7.0,
            "def".into(),
        );
        let text = encode(&registry.gather(), &ex);
        assert!(
            text.contains("# HELP lat_seconds Latency \\\"quoted\\\".\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE lat_seconds histogram\n"), "{text}");
        assert!(
            text.contains("lat_seconds_bucket{route=\"r1\",le=\"0.1\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("lat_seconds_bucket{route=\"r1\",le=\"1\"} 1 # {trace_id=\"abc\"} 0.5 "),
            "{text}"
        );
        assert!(
            text.contains("lat_seconds_bucket{route=\"r1\",le=\"+Inf\"} 2 # {trace_id=\"def\"} 7 "),
            "{text}"
        );
        assert!(
            text.contains("lat_seconds_count{route=\"r1\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE reqs counter\nreqs_total{route=\"r1\"} 1\n"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn only_an_openmetrics_accept_gets_it() {
        assert!(wanted(Some(
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"
        )));
        assert!(!wanted(Some("text/plain")));
        assert!(!wanted(None));
    }
}
