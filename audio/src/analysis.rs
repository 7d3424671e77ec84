//! Signal analysis for tests and benches (feature `analysis`): the dominant frequency of a
//! stretch of one channel, and the SNR of a decoded signal against its source after the
//! codec's delay is found by cross-correlation.

use rustfft::num_complex::Complex;
use rustfft::FftPlanner;

/// One channel (0 = left, 1 = right) of interleaved stereo samples, as `f64`.
pub fn channel(interleaved: &[i16], ch: usize) -> Vec<f64> {
    interleaved
        .chunks_exact(2)
        .map(|c| c[ch.min(1)] as f64)
        .collect()
}

/// The frequency (Hz) with the most energy in `samples` at `rate` Hz: a Hann-windowed FFT,
/// the peak bin refined by parabolic interpolation of the log magnitudes (accurate to well
/// under a bin for a steady tone). `None` for fewer than 64 samples or silence.
pub fn dominant_frequency(samples: &[f64], rate: u32) -> Option<f64> {
    let n = samples.len();
    if n < 64 {
        return None;
    }
    let mut buf: Vec<Complex<f64>> = samples
        .iter()
        .enumerate()
        .map(|(i, &s)| {
            let w = 0.5 - 0.5 * (std::f64::consts::TAU * i as f64 / (n - 1) as f64).cos();
            Complex::new(s * w, 0.0)
        })
        .collect();
    FftPlanner::new().plan_fft_forward(n).process(&mut buf);
    let mags: Vec<f64> = buf[..n / 2].iter().map(|c| c.norm()).collect();
    let (k, &peak) = mags
        .iter()
        .enumerate()
        .skip(1)
        .max_by(|a, b| a.1.total_cmp(b.1))?;
    if peak <= 1e-9 {
        return None;
    }
    let mut delta = 0.0;
    if k + 1 < mags.len() {
        let (a, b, c) = (
            mags[k - 1].max(1e-12).ln(),
            peak.ln(),
            mags[k + 1].max(1e-12).ln(),
        );
        let d = a - 2.0 * b + c;
        if d.abs() > 1e-12 {
            delta = (0.5 * (a - c) / d).clamp(-0.5, 0.5);
        }
    }
    Some((k as f64 + delta) * rate as f64 / n as f64)
}

/// The delay (in samples, `0..=max_lag`) by which `decoded` lags `reference`: the lag with
/// the largest cross-correlation.
pub fn best_lag(reference: &[f64], decoded: &[f64], max_lag: usize) -> usize {
    let mut best = (0, f64::MIN);
    for lag in 0..=max_lag.min(decoded.len()) {
        let m = reference.len().min(decoded.len() - lag);
        let c: f64 = (0..m).map(|i| reference[i] * decoded[i + lag]).sum();
        if c > best.1 {
            best = (lag, c);
        }
    }
    best.0
}

/// The SNR in dB of `decoded` against `reference` once `decoded` is shifted back by the
/// best lag up to `max_lag`: signal energy over the energy of the difference. Infinite for
/// an exact copy.
pub fn snr_db(reference: &[f64], decoded: &[f64], max_lag: usize) -> f64 {
    let lag = best_lag(reference, decoded, max_lag);
    let m = reference.len().min(decoded.len().saturating_sub(lag));
    let (mut sig, mut noise) = (0.0, 0.0);
    for i in 0..m {
        sig += reference[i] * reference[i];
        let e = reference[i] - decoded[i + lag];
        noise += e * e;
    }
    if noise == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (sig / noise).log10()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(n: usize, hz: f64, rate: f64) -> Vec<f64> {
        (0..n)
            .map(|i| (i as f64 * hz * std::f64::consts::TAU / rate).sin() * 10_000.0)
            .collect()
    }

    #[test]
    fn finds_a_tone_between_bins() {
        let f = dominant_frequency(&sine(4800, 1234.5, 48_000.0), 48_000).unwrap();
        assert!((f - 1234.5).abs() < 1.0, "{f}");
        assert_eq!(dominant_frequency(&[0.0; 100], 48_000), None);
    }

    #[test]
    fn snr_finds_the_delay() {
        let r = sine(2000, 440.0, 48_000.0);
        let mut d = vec![0.0; 37];
        d.extend(r.iter().map(|v| v + 10.0));
        assert_eq!(best_lag(&r, &d, 100), 37);
        let s = snr_db(&r, &d, 100);
        assert!(s > 50.0 && s.is_finite(), "{s}");
        assert_eq!(snr_db(&r, &r, 10), f64::INFINITY);
    }
}
