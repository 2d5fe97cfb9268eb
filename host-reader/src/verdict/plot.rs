//! `--plot FILE.png`: what a capture looks like, for a person looking at a CI artifact.
//!
//! One picture per file: each channel's waveform (min/max per pixel column, full scale) and a
//! spectrogram of the channels' mix (0 Hz to Nyquist, 90 dB of range), one above the other on
//! the same time axis, with the capture's marks drawn across all of them — segment start
//! (green), gaps (red band), xruns (orange), parameter changes (blue), the guest closing and
//! reopening the device (grey) — and the first mismatch (magenta, labelled) when a check
//! failed. Text is drawn with DejaVu Sans compiled into the binary (no system font needed).

use std::path::Path;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::colors::colormaps::{ColorMap, ViridisRGB};

use super::audio::{AudioFile, CHUNK_FRAMES};
use super::judge::{JudgedFile, Outcome};
use super::marks::{Mark, MarkKind};
use super::spectrum::Stft;
use super::{Mismatch, VerdictError};

const WIDTH: u32 = 1600;
const TITLE_H: u32 = 44;
const LEGEND_H: u32 = 26;
const SPECTROGRAM_H: u32 = 300;
const AXIS_H: u32 = 44;
const Y_LABELS_W: u32 = 80;
const RIGHT_MARGIN: u32 = 24;
/// The spectrogram's colour scale covers this many dB below its loudest cell.
const SPECTROGRAM_RANGE_DB: f64 = 90.0;
const FONT: &str = "sans-serif";

const GAP: RGBColor = RGBColor(220, 30, 30);
const XRUN: RGBColor = RGBColor(245, 140, 0);
const PARAMS: RGBColor = RGBColor(30, 90, 230);
const SEGMENT: RGBColor = RGBColor(0, 160, 60);
const OPEN_CLOSE: RGBColor = RGBColor(120, 120, 120);
const MISMATCH: RGBColor = RGBColor(220, 0, 200);
const WAVE: RGBColor = RGBColor(25, 60, 120);

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The bytes are DejaVu Sans itself: parsing them cannot fail.
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
    });
}

fn err(e: impl std::fmt::Display) -> VerdictError {
    VerdictError::Other(format!("drawing the plot: {e}"))
}

/// Pixel height of one channel's waveform.
fn wave_height(channels: usize) -> u32 {
    match channels {
        0..=2 => 150,
        3..=4 => 100,
        5..=8 => 64,
        _ => 40,
    }
}

/// Draws `f` (judged as `judged`, if it was) into `out` as a PNG.
pub fn plot_file(
    f: &mut AudioFile,
    marks: &[Mark],
    mismatch: Option<&Mismatch>,
    verdict: Option<(Outcome, &str)>,
    out: &Path,
) -> Result<(), VerdictError> {
    register_font();
    let ch = f.channels();
    let wave_h = wave_height(ch);
    let height = TITLE_H + LEGEND_H + wave_h * ch as u32 + SPECTROGRAM_H + AXIS_H;
    let mut buf = vec![255u8; (WIDTH * height * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let (title, rest) = root.split_vertically(TITLE_H);
        let (legend, rest) = rest.split_vertically(LEGEND_H);
        let (waves, spec) = rest.split_vertically(wave_h * ch as u32);
        draw_title(&title, f, verdict)?;
        draw_legend(&legend, mismatch.is_some())?;
        let dur = f.duration_s().max(1.0 / f.rate() as f64);

        let mut envelope: Option<Vec<Vec<(f32, f32)>>> = None;
        for (c, area) in waves.split_evenly((ch, 1)).iter().enumerate() {
            let mut chart = ChartBuilder::on(area)
                .margin_right(RIGHT_MARGIN)
                .margin_top(2)
                .y_label_area_size(Y_LABELS_W)
                .margin_bottom(4)
                .build_cartesian_2d(0f64..dur, -1.05f64..1.05f64)
                .map_err(err)?;
            chart
                .configure_mesh()
                .disable_mesh()
                .y_labels(3)
                .y_label_formatter(&|y| format!("{y:.0}"))
                .y_desc(format!("ch {}", c + 1))
                .y_label_style((FONT, 13))
                .axis_desc_style((FONT, 15))
                .x_labels(0)
                .draw()
                .map_err(err)?;
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(0.0, 0.0), (dur, 0.0)],
                    RGBColor(210, 210, 210),
                )))
                .map_err(err)?;
            let cols = chart.plotting_area().dim_in_pixel().0.max(1) as usize;
            if envelope.is_none() {
                envelope = Some(envelope_of(f, cols)?);
            }
            let env = &envelope.as_ref().expect("computed above")[c];
            let step = dur / env.len() as f64;
            chart
                .draw_series(env.iter().enumerate().filter(|(_, (lo, hi))| lo <= hi).map(
                    |(i, &(lo, hi))| {
                        let x0 = i as f64 * step;
                        // At least a pixel tall, so digital silence still shows as a line.
                        let (lo, hi) = if hi - lo < 0.01 {
                            (lo - 0.005, hi + 0.005)
                        } else {
                            (lo, hi)
                        };
                        Rectangle::new([(x0, lo as f64), (x0 + step, hi as f64)], WAVE.filled())
                    },
                ))
                .map_err(err)?;
            draw_marks(&mut chart, marks, (-1.05, 1.05), c == 0)?;
            if let Some(m) = mismatch {
                let here = m.channel.map(|mc| mc as usize == c + 1).unwrap_or(c == 0);
                draw_mismatch(&mut chart, m, (-1.05, 1.05), here)?;
            }
        }

        let nyq = f.rate() as f64 / 2000.0;
        let mut chart = ChartBuilder::on(&spec)
            .margin_right(RIGHT_MARGIN)
            .margin_top(4)
            .y_label_area_size(Y_LABELS_W)
            .x_label_area_size(AXIS_H)
            .build_cartesian_2d(0f64..dur, 0f64..nyq)
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("time (s)")
            .y_desc("kHz (mix)")
            .x_label_style((FONT, 13))
            .y_label_style((FONT, 13))
            .axis_desc_style((FONT, 15))
            .x_label_formatter(&|x| format!("{x:.2}"))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .draw()
            .map_err(err)?;
        let (pw, ph) = chart.plotting_area().dim_in_pixel();
        let img = spectrogram(f, pw as usize, ph as usize)?;
        chart
            .draw_series(std::iter::once(
                BitMapElement::with_owned_buffer((0.0, nyq), (pw, ph), img)
                    .ok_or_else(|| err("spectrogram buffer size"))?,
            ))
            .map_err(err)?;
        draw_marks(&mut chart, marks, (0.0, nyq), false)?;
        if let Some(m) = mismatch {
            draw_mismatch(&mut chart, m, (0.0, nyq), false)?;
        }
        root.present().map_err(err)?;
    }
    write_png(out, &buf, WIDTH, height)
}

/// Plots a judged file to `out` (`raw`: the shape of a raw file).
pub fn plot_judged(
    j: &JudgedFile,
    raw: Option<crate::convert::AudioShape>,
    verdict: (Outcome, &str),
    out: &Path,
) -> Result<(), VerdictError> {
    let mut f = AudioFile::open(&j.file.path, raw)?;
    plot_file(
        &mut f,
        &j.file.marks,
        j.first_mismatch(),
        Some(verdict),
        out,
    )
}

fn draw_title(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    f: &AudioFile,
    verdict: Option<(Outcome, &str)>,
) -> Result<(), VerdictError> {
    let head = format!(
        "{}   {}   {:.3} s",
        f.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| f.name()),
        f.shape,
        f.duration_s()
    );
    area.draw_text(&head, &(FONT, 20).into_font().color(&BLACK), (12, 6))
        .map_err(err)?;
    if let Some((outcome, line)) = verdict {
        let (color, mut text) = match outcome {
            Outcome::Match => (RGBColor(0, 130, 50), line.to_string()),
            Outcome::Mismatch => (MISMATCH, line.to_string()),
            Outcome::None => (RGBColor(90, 90, 90), line.to_string()),
        };
        // One line: what fits in the picture's width.
        if text.chars().count() > 190 {
            text = text.chars().take(187).collect::<String>() + "...";
        }
        area.draw_text(&text, &(FONT, 14).into_font().color(&color), (12, 28))
            .map_err(err)?;
    }
    Ok(())
}

fn draw_legend(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    with_mismatch: bool,
) -> Result<(), VerdictError> {
    let mut items = vec![
        ("segment start", SEGMENT),
        ("gap (filled with silence)", GAP),
        ("xrun", XRUN),
        ("parameter change", PARAMS),
        ("device closed / reopened", OPEN_CLOSE),
    ];
    if with_mismatch {
        items.push(("first mismatch", MISMATCH));
    }
    let mut x = Y_LABELS_W as i32;
    let font = (FONT, 13).into_font().color(&BLACK);
    for (label, color) in items {
        area.draw(&Rectangle::new([(x, 8), (x + 14, 20)], color.filled()))
            .map_err(err)?;
        area.draw_text(label, &font, (x + 20, 6)).map_err(err)?;
        let (w, _) = area.estimate_text_size(label, &font).map_err(err)?;
        x += 20 + w as i32 + 28;
    }
    Ok(())
}

type Chart<'a, 'b> = ChartContext<
    'a,
    BitMapBackend<'b>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

fn draw_marks(
    chart: &mut Chart<'_, '_>,
    marks: &[Mark],
    (y0, y1): (f64, f64),
    labels: bool,
) -> Result<(), VerdictError> {
    for m in marks {
        let t = m.time_s;
        let color = match m.kind {
            MarkKind::SegmentStart => {
                if t == 0.0 {
                    // The file's own start is the left edge; a line there says nothing.
                    continue;
                }
                SEGMENT
            }
            MarkKind::Gap => GAP,
            MarkKind::Xrun => XRUN,
            MarkKind::Params => PARAMS,
            MarkKind::Closed | MarkKind::Opened => OPEN_CLOSE,
        };
        if m.kind == MarkKind::Gap {
            let d = m.duration_s.unwrap_or(0.0);
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(t, y0), (t + d, y1)],
                    GAP.mix(0.35).filled(),
                )))
                .map_err(err)?;
        }
        let style =
            ShapeStyle::from(&color).stroke_width(if m.kind == MarkKind::Gap { 2 } else { 1 });
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(t, y0), (t, y1)],
                style,
            )))
            .map_err(err)?;
        if labels
            && matches!(
                m.kind,
                MarkKind::Gap | MarkKind::Params | MarkKind::SegmentStart
            )
        {
            let dx = (chart.x_range().end - chart.x_range().start) * 0.003;
            chart
                .draw_series(std::iter::once(Text::new(
                    m.kind.label().to_string(),
                    (t + dx, y1 - (y1 - y0) * 0.02),
                    (FONT, 12).into_font().color(&color),
                )))
                .map_err(err)?;
        }
    }
    Ok(())
}

fn draw_mismatch(
    chart: &mut Chart<'_, '_>,
    m: &Mismatch,
    (y0, y1): (f64, f64),
    label: bool,
) -> Result<(), VerdictError> {
    let t = m.time_s;
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(t, y0), (t, y1)],
            ShapeStyle::from(&MISMATCH).stroke_width(3),
        )))
        .map_err(err)?;
    if label {
        let mut text = format!("first mismatch {:.6} s", t);
        if let Some(c) = m.channel {
            text += &format!(", ch {c}");
        }
        if let (Some(a), Some(b)) = (&m.capture_value, &m.golden_value) {
            text += &format!(": {a} vs {b}");
        }
        // Inside the pane, on the side of the line with room.
        let (x0, x1) = (chart.x_range().start, chart.x_range().end);
        let left = t > x0 + (x1 - x0) * 0.6;
        let style =
            (FONT, 14)
                .into_font()
                .color(&MISMATCH)
                .pos(plotters::style::text_anchor::Pos::new(
                    if left {
                        plotters::style::text_anchor::HPos::Right
                    } else {
                        plotters::style::text_anchor::HPos::Left
                    },
                    plotters::style::text_anchor::VPos::Top,
                ));
        let dx = (x1 - x0) * 0.004 * if left { -1.0 } else { 1.0 };
        chart
            .draw_series(std::iter::once(Text::new(
                text,
                (t + dx, y1 - (y1 - y0) * 0.04),
                style,
            )))
            .map_err(err)?;
    }
    Ok(())
}

/// Per channel, the min and max sample of each of `cols` equal slices of the file (a slice
/// with no frames has min > max).
fn envelope_of(f: &mut AudioFile, cols: usize) -> Result<Vec<Vec<(f32, f32)>>, VerdictError> {
    let ch = f.channels();
    let per_frame = cols as f64 / f.frames().max(1) as f64;
    let mut env = vec![vec![(f32::MAX, f32::MIN); cols]; ch];
    let (mut raw, mut dec) = (Vec::new(), Vec::new());
    let mut at = 0u64;
    while at < f.frames() {
        f.read_f64(at, CHUNK_FRAMES, &mut raw, &mut dec)?;
        for (i, frame) in dec.chunks_exact(ch).enumerate() {
            let col = (((at + i as u64) as f64 * per_frame) as usize).min(cols - 1);
            for (c, &v) in frame.iter().enumerate() {
                let e = &mut env[c][col];
                e.0 = e.0.min(v as f32);
                e.1 = e.1.max(v as f32);
            }
        }
        at += CHUNK_FRAMES as u64;
    }
    Ok(env)
}

/// The spectrogram as `w`×`h` RGB pixels: column x is the spectrum of the frames around
/// its time, row 0 is Nyquist.
fn spectrogram(f: &mut AudioFile, w: usize, h: usize) -> Result<Vec<u8>, VerdictError> {
    let ch = f.channels();
    let n = (f.rate() as usize / 24)
        .next_power_of_two()
        .clamp(256, 8192);
    let mut stft = Stft::new(n);
    let bins = n / 2 + 1;
    let frames = f.frames();
    let mut cols: Vec<Option<Vec<f64>>> = Vec::with_capacity(w);
    let (mut raw, mut dec) = (Vec::new(), Vec::new());
    let mut mono = Vec::with_capacity(n);
    let mut top = f64::NEG_INFINITY;
    for x in 0..w {
        let center = ((x as f64 + 0.5) * frames as f64 / w as f64) as u64;
        let start = center.saturating_sub(n as u64 / 2);
        f.read_f64(start, n, &mut raw, &mut dec)?;
        mono.clear();
        mono.extend(
            dec.chunks_exact(ch)
                .map(|fr| (fr.iter().sum::<f64>() / ch as f64) as f32),
        );
        if mono.iter().all(|&v| v == 0.0) {
            cols.push(None);
            continue;
        }
        let mut p = vec![0.0; bins];
        stft.accumulate(&mono, &mut p);
        // Per pixel row: the strongest bin it covers.
        let mut col = vec![f64::NEG_INFINITY; h];
        for (y, c) in col.iter_mut().enumerate() {
            let b0 = ((h - 1 - y) as f64 / h as f64 * (bins - 1) as f64) as usize;
            let b1 = (((h - y) as f64 / h as f64 * (bins - 1) as f64) as usize).max(b0 + 1);
            let m = p[b0..b1.min(bins)].iter().cloned().fold(0.0, f64::max);
            *c = if m > 0.0 {
                10.0 * m.log10()
            } else {
                f64::NEG_INFINITY
            };
            top = top.max(*c);
        }
        cols.push(Some(col));
    }
    let mut img = vec![0u8; w * h * 3];
    let floor = ViridisRGB.get_color(0.0f32);
    for y in 0..h {
        for (x, col) in cols.iter().enumerate() {
            let c = match col {
                Some(col) if top.is_finite() => {
                    let v = ((col[y] - top) / SPECTROGRAM_RANGE_DB + 1.0).clamp(0.0, 1.0);
                    ViridisRGB.get_color(v as f32)
                }
                _ => floor,
            };
            let i = (y * w + x) * 3;
            img[i] = c.0;
            img[i + 1] = c.1;
            img[i + 2] = c.2;
        }
    }
    Ok(img)
}

fn write_png(path: &Path, rgb: &[u8], w: u32, h: u32) -> Result<(), VerdictError> {
    let file = std::fs::File::create(path).map_err(|e| VerdictError::io(path, e))?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w, h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut wr = enc
        .write_header()
        .map_err(|e| VerdictError::Other(format!("{}: {e}", path.display())))?;
    wr.write_image_data(rgb)
        .and_then(|_| wr.finish())
        .map_err(|e| VerdictError::Other(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::super::marks::CaptureLog;
    use super::super::tests_support::*;
    use super::*;

    #[test]
    fn draws_a_png_with_marks_and_a_mismatch() {
        let d = std::env::temp_dir().join(format!("dsproxy-plot-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let mut s = tone_i16(48000, 2, 1000.0, 0.5, 24000);
        s.extend(vec![0i16; 2 * 4800]);
        s.extend(tone_i16(48000, 2, 3000.0, 0.25, 24000));
        let mut f = file_s16("cap.wav", 48000, 2, &s);
        let mut log = CaptureLog::new();
        log.segment_started(0, Path::new("cap.wav"), 1, Some(f.shape));
        log.mark(0, 96000, MarkKind::Gap, Some(100_000_000), "gap".into());
        log.mark(0, 150000, MarkKind::Xrun, Some(5_000_000), "xrun".into());
        log.mark(0, 180000, MarkKind::Params, None, "period".into());
        log.mark(0, 200000, MarkKind::Closed, None, "closed".into());
        let mut m = Mismatch::at(&f, 30000, "x".into());
        m.channel = Some(2);
        m.capture_value = Some("1".into());
        m.golden_value = Some("2".into());
        let out = d.join("p.png");
        plot_file(
            &mut f,
            &log.files()[0].marks,
            Some(&m),
            Some((Outcome::Mismatch, "MISMATCH: test")),
            &out,
        )
        .unwrap();
        let png = std::fs::read(&out).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let dec = png::Decoder::new(std::io::Cursor::new(png));
        let r = dec.read_info().unwrap();
        let info = r.info();
        assert_eq!(info.width, WIDTH);
        assert_eq!(
            info.height,
            TITLE_H + LEGEND_H + 2 * 150 + SPECTROGRAM_H + AXIS_H
        );
    }

    #[test]
    fn envelope_covers_every_column() {
        let s = tone_i16(8000, 1, 100.0, 1.0, 8000);
        let mut f = file_s16("e.wav", 8000, 1, &s);
        let env = envelope_of(&mut f, 100).unwrap();
        assert_eq!(env[0].len(), 100);
        assert!(env[0]
            .iter()
            .all(|(lo, hi)| lo <= hi && *hi > 0.9 && *lo < -0.9));
    }
}
