//! Bar charts drawn on the server as SVG (no script): one bar per day, amounts in fen,
//! negative days below the axis. The chart has a title and a description for screen
//! readers; the table beside it holds the exact figures.

use maud::{html, Markup};

const WIDTH: i64 = 720;
const HEIGHT: i64 = 220;
const PAD: i64 = 28;

/// A bar chart of `bars` (label, fen), oldest first.
pub fn bars(title: &str, bars: &[(String, i64)]) -> Markup {
    let top = bars.iter().map(|(_, v)| v.max(&0)).max().copied().unwrap_or(0);
    let bottom = bars.iter().map(|(_, v)| v.min(&0)).min().copied().unwrap_or(0);
    let span = (top - bottom).max(1);
    let plot = HEIGHT - 2 * PAD;
    let y_of = |v: i64| PAD + (top - v) * plot / span;
    let zero = y_of(0);
    let n = bars.len().max(1) as i64;
    let slot = (WIDTH - 2 * PAD) / n;
    let bar_w = (slot * 7 / 10).max(1);
    html! {
        svg class="chart" viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } role="img" aria-labelledby="chart-title" xmlns="http://www.w3.org/2000/svg" {
            title id="chart-title" { (title) }
            line x1=(PAD) x2=(WIDTH - PAD) y1=(zero) y2=(zero) class="axis" {}
            @for (i, (label, v)) in bars.iter().enumerate() {
                @let x = PAD + i as i64 * slot + (slot - bar_w) / 2;
                @let (y, h) = if *v >= 0 { (y_of(*v), zero - y_of(*v)) } else { (zero, y_of(*v) - zero) };
                rect x=(x) y=(y) width=(bar_w) height=(h.max(1)) class=(if *v >= 0 { "bar" } else { "bar negative" }) {
                    title { (label) ": ¥" (facepay_domain::money::fen_to_string(*v)) }
                }
                @if n <= 16 || i as i64 % (n / 8).max(1) == 0 {
                    text x=(x + bar_w / 2) y=(HEIGHT - 8) text-anchor="middle" class="tick" { (label.get(5..).unwrap_or(label)) }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_bar_is_drawn_with_its_exact_amount_and_a_negative_one_below_the_axis() {
        let svg = bars("net", &[("2026-12-01".into(), 12_345), ("2026-12-02".into(), -500)]).into_string();
        assert_eq!(svg.matches("<rect").count(), 2);
        assert!(svg.contains("2026-12-01: ¥123.45"), "{svg}");
        assert!(svg.contains("2026-12-02: ¥-5.00"), "{svg}");
        assert!(svg.contains("class=\"bar negative\""));
    }
}
