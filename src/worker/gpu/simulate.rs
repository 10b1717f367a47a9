//! Simulated GPUs from a `--simulate-gpus` spec, for planning and tests on machines without GPUs.
//!
//! A spec is comma-separated `COUNTxMODEL-SIZEGB` entries: `4xH100-80GB`, `2xA100-40GB,1xL4-24GB`,
//! `8xMI300X-192GB`, `8x910B-64GB`. `COUNTx` may be left out (one device). `MI<digits>…` models are AMD
//! (`rocm`), `910…`/`310…`/`Ascend…` models are Huawei Ascend (`cann`), everything else is NVIDIA
//! (`cuda`). Indices count per type, so ids (`<worker>:<type>:<index>`) stay unique in mixed specs.
//! Devices are empty (`memory_used` 0) and marked `simulated: true`, unless an entry ends in `+USEDGB`
//! (`1xH100-80GB+20GB`): each of its devices then has that much in use by processes outside the
//! cluster (`memory_used` and `memory_external`), so tests can check that nobody books it.

use super::{GpuDevice, GpuError, GpuType, GpuVendor};

/// More simulated devices than this on one worker is surely a typo.
pub const MAX_SIMULATED_DEVICES: u32 = 1024;
/// Largest memory size accepted for one simulated device, in GB.
pub const MAX_SIMULATED_GB: u64 = 4096;

/// Parses a `--simulate-gpus` spec into devices. A bad entry is an error that names it.
pub fn parse_simulate_spec(spec: &str) -> Result<Vec<GpuDevice>, GpuError> {
    let mut devices: Vec<GpuDevice> = Vec::new();
    for part in spec.split(',') {
        let entry =
            parse_entry(part.trim()).map_err(|reason| GpuError::BadSpec { part: part.trim().into(), reason })?;
        if devices.len() as u64 + u64::from(entry.count) > u64::from(MAX_SIMULATED_DEVICES) {
            return Err(GpuError::BadSpec {
                part: part.trim().into(),
                reason: format!("more than {MAX_SIMULATED_DEVICES} devices in all"),
            });
        }
        let first = devices.iter().filter(|d| d.gpu_type == entry.gpu_type).count() as u32;
        for index in first..first + entry.count {
            devices.push(GpuDevice {
                index,
                name: entry.name.clone(),
                vendor: entry.vendor,
                gpu_type: entry.gpu_type,
                uuid: None,
                memory_total: entry.gb << 30,
                memory_used: entry.external_gb << 30,
                memory_utilization_rate: GpuDevice::utilization_rate(entry.external_gb << 30, entry.gb << 30),
                core_utilization_rate: None,
                temperature: None,
                simulated: true,
                memory_external: entry.external_gb << 30,
            });
        }
    }
    Ok(devices)
}

struct Entry {
    count: u32,
    name: String,
    vendor: GpuVendor,
    gpu_type: GpuType,
    gb: u64,
    /// In use outside the cluster (`+USEDGB`).
    external_gb: u64,
}

fn parse_entry(part: &str) -> Result<Entry, String> {
    if part.is_empty() {
        return Err("empty entry".into());
    }
    let digits = part.bytes().take_while(u8::is_ascii_digit).count();
    let (count, rest) = match part[digits..].strip_prefix(['x', 'X']) {
        Some(rest) if digits > 0 => {
            let count: u32 = part[..digits].parse().map_err(|_| format!("count {:?} is too large", &part[..digits]))?;
            (count, rest)
        }
        _ => (1, part),
    };
    if count == 0 {
        return Err("count must be at least 1".into());
    }
    let (model, size) = rest.rsplit_once('-').ok_or("missing memory size (`-80GB`)")?;
    if model.is_empty() {
        return Err("missing model name".into());
    }
    if let Some(bad) = model.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '.')) {
        return Err(format!("model {model:?} contains {bad:?}; use letters and digits"));
    }
    let (size, external) = match size.split_once('+') {
        Some((size, used)) => (size, Some(used)),
        None => (size, None),
    };
    let gb = parse_gb(size)
        .ok_or_else(|| format!("memory size {size:?} is not a whole number of GB from 1 to {MAX_SIMULATED_GB}"))?;
    let external_gb = match external {
        None => 0,
        Some(used) => parse_gb(used)
            .filter(|u| *u <= gb)
            .ok_or_else(|| format!("memory in use {used:?} is not a whole number of GB from 1 to {gb}"))?,
    };
    let (name, vendor, gpu_type) = classify(model, gb);
    Ok(Entry { count, name, vendor, gpu_type, gb, external_gb })
}

/// `80GB`, `80G`, `80GiB` (any case) → 80.
fn parse_gb(size: &str) -> Option<u64> {
    let lower = size.to_ascii_lowercase();
    let number = ["gib", "gb", "g"].iter().find_map(|unit| lower.strip_suffix(unit))?;
    let gb: u64 = number.parse().ok()?;
    (1..=MAX_SIMULATED_GB).contains(&gb).then_some(gb)
}

/// A plausible product name, vendor and type for a model word.
fn classify(model: &str, gb: u64) -> (String, GpuVendor, GpuType) {
    let upper = model.to_ascii_uppercase();
    let amd = upper.strip_prefix("MI").is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()));
    if amd {
        return (format!("AMD Instinct {upper}"), GpuVendor::Amd, GpuType::Rocm);
    }
    let ascend_model = upper.strip_prefix("ASCEND").map(|r| r.trim_start_matches('_'));
    if let Some(chip) =
        ascend_model.or_else(|| (upper.starts_with("910") || upper.starts_with("310")).then_some(&*upper))
    {
        return (format!("Ascend {chip}"), GpuVendor::Ascend, GpuType::Cann);
    }
    (format!("NVIDIA {model} {gb}GB"), GpuVendor::Nvidia, GpuType::Cuda)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn good_specs() {
        // (spec, [(id on worker "w", name, memory_total)])
        type Case = (&'static str, &'static [(&'static str, &'static str, u64)]);
        let cases: &[Case] = &[
            ("1xL4-24GB", &[("w:cuda:0", "NVIDIA L4 24GB", 24 * GIB)]),
            ("L4-24GB", &[("w:cuda:0", "NVIDIA L4 24GB", 24 * GIB)]),
            (
                "2xA100-40GB,1xL4-24GB",
                &[
                    ("w:cuda:0", "NVIDIA A100 40GB", 40 * GIB),
                    ("w:cuda:1", "NVIDIA A100 40GB", 40 * GIB),
                    ("w:cuda:2", "NVIDIA L4 24GB", 24 * GIB),
                ],
            ),
            ("1xMI300X-192GB", &[("w:rocm:0", "AMD Instinct MI300X", 192 * GIB)]),
            ("1xmi250x-128gib", &[("w:rocm:0", "AMD Instinct MI250X", 128 * GIB)]),
            ("1X910B-64G", &[("w:cann:0", "Ascend 910B", 64 * GIB)]),
            ("1xAscend910B3-64GB", &[("w:cann:0", "Ascend 910B3", 64 * GIB)]),
            (
                " 1xH100-80GB , 1xMI300X-192GB, 1xH100-80GB",
                &[
                    ("w:cuda:0", "NVIDIA H100 80GB", 80 * GIB),
                    ("w:rocm:0", "AMD Instinct MI300X", 192 * GIB),
                    ("w:cuda:1", "NVIDIA H100 80GB", 80 * GIB),
                ],
            ),
        ];
        for (spec, want) in cases {
            let devices = parse_simulate_spec(spec).unwrap_or_else(|e| panic!("{spec}: {e}"));
            let got: Vec<_> = devices.iter().map(|d| (d.id("w"), d.name.as_str(), d.memory_total)).collect();
            let want: Vec<_> = want.iter().map(|(id, name, total)| (id.to_string(), *name, *total)).collect();
            assert_eq!(got, want, "{spec}");
            assert!(devices.iter().all(|d| d.simulated && d.memory_used == 0 && d.uuid.is_none()), "{spec}");
        }
    }

    #[test]
    fn memory_used_outside_the_cluster() {
        let devices = parse_simulate_spec("2xH100-80GB+20GB,1xL4-24GB").expect("parse");
        let got: Vec<(u64, u64)> = devices.iter().map(|d| (d.memory_used, d.memory_external)).collect();
        assert_eq!(got, [(20 * GIB, 20 * GIB), (20 * GIB, 20 * GIB), (0, 0)]);
        for (spec, want) in [
            ("1xH100-80GB+90GB", "memory in use \"90GB\" is not a whole number of GB from 1 to 80"),
            ("1xH100-80GB+x", "memory in use \"x\""),
            ("1xH100-80GB+0GB", "memory in use \"0GB\""),
        ] {
            let e = parse_simulate_spec(spec).expect_err(spec).to_string();
            assert!(e.contains(want), "{spec}: {e}");
        }
    }

    #[test]
    fn four_h100s_and_eight_mi300x() {
        let h100 = parse_simulate_spec("4xH100-80GB").expect("parse");
        assert_eq!(h100.len(), 4);
        assert_eq!(h100.iter().map(|d| d.index).collect::<Vec<_>>(), [0, 1, 2, 3]);
        assert!(h100.iter().all(|d| d.vendor == GpuVendor::Nvidia && d.gpu_type == GpuType::Cuda));
        let mi = parse_simulate_spec("8xMI300X-192GB").expect("parse");
        assert_eq!(mi.len(), 8);
        assert!(mi.iter().all(|d| d.vendor == GpuVendor::Amd && d.memory_total == 192 * GIB));
    }

    #[test]
    fn bad_specs_name_the_entry() {
        let cases = [
            ("", "\"\": empty entry"),
            ("4xH100-80GB,", "\"\": empty entry"),
            ("4xH100", "\"4xH100\": missing memory size"),
            ("4xH100-80", "\"4xH100-80\": memory size \"80\" is not a whole number of GB"),
            ("4xH100-80TB", "memory size \"80TB\""),
            ("4xH100-0GB", "memory size \"0GB\""),
            ("4xH100-99999GB", "memory size \"99999GB\""),
            ("0xH100-80GB", "\"0xH100-80GB\": count must be at least 1"),
            ("99999999999xH100-80GB", "count \"99999999999\" is too large"),
            ("2000xH100-80GB", "more than 1024 devices in all"),
            ("4x-80GB", "missing model name"),
            ("4xH 100-80GB", "model \"H 100\" contains ' '"),
        ];
        for (spec, want) in cases {
            let e = parse_simulate_spec(spec).expect_err(spec).to_string();
            assert!(e.starts_with("bad --simulate-gpus entry "), "{spec}: {e}");
            assert!(e.contains(want), "{spec}: {e}");
            assert!(e.contains("expected COUNTxMODEL-SIZEGB"), "{spec}: {e}");
        }
    }

    proptest! {
        #[test]
        fn never_panics(spec in "\\PC{0,60}") {
            let _ = parse_simulate_spec(&spec);
        }

        #[test]
        fn well_formed_specs_parse(count in 1u32..64, model in "[A-Z][A-Z0-9]{0,6}", gb in 1u64..=4096) {
            let devices = parse_simulate_spec(&format!("{count}x{model}-{gb}GB")).expect("well formed");
            prop_assert_eq!(devices.len() as u32, count);
            prop_assert!(devices.iter().all(|d| d.memory_total == gb << 30 && d.simulated));
        }
    }
}
