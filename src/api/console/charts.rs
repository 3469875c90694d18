//! Pictures for where people would rather look than read, drawn on the server as inline SVG
//! (no script, no asset): decisions over time by outcome (stacked columns) and counts by a name
//! (horizontal bars: denials by reason, pending approvals by age).

use maud::{Markup, html};

const WIDTH: u64 = 720;
const HEIGHT: u64 = 140;
const ALLOW: &str = "#1f7a3d";
const DENY: &str = "#b3261e";
const BAR: &str = "#2f5bd3";

/// Columns of allows under denies, one per bucket, labelled at the first, the middle and the
/// last; `labels[i]` names bucket `i`.
pub(super) fn decisions_over_time(id: &str, buckets: &[(String, u64, u64)]) -> Markup {
    let most = buckets
        .iter()
        .map(|(_, a, d)| a + d)
        .max()
        .unwrap_or(0)
        .max(1);
    let count = buckets.len().max(1) as u64;
    let slot = WIDTH / count;
    let bar = slot.saturating_sub(1).max(1);
    let scale = |n: u64| n * (HEIGHT - 20) / most;
    let total: (u64, u64) = buckets
        .iter()
        .fold((0, 0), |(a, d), (_, x, y)| (a + x, d + y));
    html! {
        figure.chart {
            svg id=(id) role="img" viewBox=(format!("0 0 {WIDTH} {}", HEIGHT + 18)) width="100%"
                aria-label=(format!("{} allowed and {} denied", total.0, total.1)) {
                @for (i, (label, allows, denies)) in buckets.iter().enumerate() {
                    @let x = i as u64 * slot;
                    @let allow_height = scale(*allows);
                    @let deny_height = scale(*denies);
                    rect x=(x) y=(HEIGHT - allow_height) width=(bar) height=(allow_height) fill=(ALLOW) {
                        title { (label) ": " (allows) " allowed" }
                    }
                    rect x=(x) y=(HEIGHT - allow_height - deny_height) width=(bar) height=(deny_height) fill=(DENY) {
                        title { (label) ": " (denies) " denied" }
                    }
                }
                line x1="0" y1=(HEIGHT) x2=(WIDTH) y2=(HEIGHT) stroke="#5b6575" stroke-width="1" {}
                @for i in [0, buckets.len() / 2, buckets.len().saturating_sub(1)] {
                    @if let Some((label, _, _)) = buckets.get(i) {
                        text x=((i as u64 * slot).min(WIDTH - 60)) y=(HEIGHT + 14) font-size="11" fill="#5b6575" { (label) }
                    }
                }
                text x="4" y="12" font-size="11" fill="#5b6575" { "most in one: " (most) }
            }
            figcaption {
                span.key.allow { "■" } " allowed (" (total.0) ") "
                span.key.deny { "■" } " denied (" (total.1) ")"
            }
        }
    }
}

/// One bar per name, longest first as given.
pub(super) fn bars(id: &str, items: &[(String, u64)]) -> Markup {
    let most = items.iter().map(|(_, n)| *n).max().unwrap_or(0).max(1);
    let row = 20u64;
    let label_width = 260u64;
    let height = row * items.len().max(1) as u64;
    html! {
        figure.chart {
            svg id=(id) role="img" viewBox=(format!("0 0 {WIDTH} {height}")) width="100%" {
                @for (i, (name, count)) in items.iter().enumerate() {
                    @let y = i as u64 * row;
                    @let length = count * (WIDTH - label_width - 60) / most;
                    text x="0" y=(y + 14) font-size="12" fill="#1d2430" { (name) }
                    rect x=(label_width) y=(y + 3) width=(length.max(1)) height=(row - 6) fill=(BAR) {
                        title { (name) ": " (count) }
                    }
                    text x=(label_width + length + 6) y=(y + 14) font-size="12" fill="#5b6575" { (count) }
                }
            }
        }
    }
}
