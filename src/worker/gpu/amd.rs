//! AMD (and Hygon DCU): parser for `rocm-smi … --json` output.
//!
//! `rocm-smi` prints one object per card (`"card0": {…}`) plus, in some versions, a `"system"` entry.
//! Key spelling moved between releases (`Card series` / `Card Series`, `VRAM Total Memory (B)` /
//! Hygon's `vram Total Memory (MiB)`), and every value is a string, so keys are matched without
//! regard to case and values are read leniently. Hygon cards (`DCU use`/`HCU use`, vendor "Haiguang")
//! are reported as vendor `hygon`, type `dtk`.

use serde_json::{Map, Value};

use super::{GpuDevice, GpuError, GpuType, GpuVendor, MIB, parse_optional_f64};

/// The arguments [`parse_rocm_smi_json`] expects `rocm-smi` to have been run with.
pub const ROCM_SMI_ARGS: &[&str] =
    &["--showproductname", "--showmeminfo", "vram", "--showuse", "--showtemp", "--showuniqueid", "--json"];

const TOOL: &str = "rocm-smi";

/// Parses `rocm-smi --showproductname --showmeminfo vram --showuse --showtemp --json` output.
/// Entries whose key is not `card<N>` are ignored; devices come back sorted by index.
pub fn parse_rocm_smi_json(text: &str) -> Result<Vec<GpuDevice>, GpuError> {
    let root: Value = serde_json::from_str(text).map_err(|e| GpuError::parse(TOOL, format!("not JSON: {e}")))?;
    let Value::Object(cards) = root else {
        return Err(GpuError::parse(TOOL, "expected a JSON object of cards"));
    };
    let mut devices = Vec::new();
    for (key, card) in &cards {
        let Some(index) = key.strip_prefix("card").and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Value::Object(card) = card else {
            return Err(GpuError::parse(TOOL, format!("{key} is not an object")));
        };
        devices.push(parse_card(index, card));
    }
    devices.sort_by_key(|d| d.index);
    Ok(devices)
}

fn parse_card(index: u32, card: &Map<String, Value>) -> GpuDevice {
    let hygon = card.keys().any(|k| {
        let k = k.to_ascii_lowercase();
        k.starts_with("dcu use") || k.starts_with("hcu use")
    }) || field(card, "Card Vendor").is_some_and(|v| v.contains("Haiguang"));

    let name = ["Device Name", "Card Series", "Card Model"]
        .iter()
        .find_map(|k| field(card, k))
        .unwrap_or_else(|| if hygon { "Hygon DCU".into() } else { "AMD GPU".into() });
    let uuid = field(card, "Unique ID").map(|u| u.trim_start_matches("0x").to_string()).filter(|u| !u.is_empty());
    let memory_total = memory(card, "Total Memory").unwrap_or(0);
    let memory_used = memory(card, "Total Used Memory").unwrap_or(0).min(memory_total);
    let core = ["GPU use (%)", "DCU use (%)", "HCU use (%)"].iter().find_map(|k| number(card, k));
    let temperature = [
        "Temperature (Sensor junction) (C)",
        "Temperature (Sensor edge) (C)",
        "Temperature (Sensor memory) (C)",
        "Temperature (Sensor mem) (C)",
    ]
    .iter()
    .find_map(|k| number(card, k));
    let (vendor, gpu_type) = if hygon { (GpuVendor::Hygon, GpuType::Dtk) } else { (GpuVendor::Amd, GpuType::Rocm) };
    GpuDevice {
        index,
        name,
        vendor,
        gpu_type,
        uuid,
        memory_total,
        memory_used,
        memory_utilization_rate: GpuDevice::utilization_rate(memory_used, memory_total),
        core_utilization_rate: core,
        temperature,
        simulated: false,
        memory_external: 0,
    }
}

/// A string field by case-insensitive key, `None` when absent, empty or `N/A`.
fn field(card: &Map<String, Value>, key: &str) -> Option<String> {
    let value = card.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v)?;
    let text = match value {
        Value::String(s) => s.trim().to_string(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    (!text.is_empty() && !text.eq_ignore_ascii_case("N/A")).then_some(text)
}

fn number(card: &Map<String, Value>, key: &str) -> Option<f64> {
    parse_optional_f64(&field(card, key)?)
}

/// `VRAM <what> (B)` or `VRAM <what> (MiB)` in bytes (key case ignored).
fn memory(card: &Map<String, Value>, what: &str) -> Option<u64> {
    let bytes = |unit: &str, scale: u64| {
        let text = field(card, &format!("VRAM {what} ({unit})"))?;
        if let Ok(whole) = text.parse::<u64>() {
            return whole.checked_mul(scale);
        }
        let value: f64 = text.parse().ok()?;
        // `as` saturates: an absurd value cannot wrap around.
        (value.is_finite() && value >= 0.0).then_some((value * scale as f64) as u64)
    };
    bytes("B", 1).or_else(|| bytes("MiB", MIB))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const RX7800XT: &str = include_str!("../../../tests/fixtures/gpu/rocm-smi-rx7800xt.json");
    const HYGON: &str = include_str!("../../../tests/fixtures/gpu/rocm-smi-hygon-k100ai.json");
    const MI250_ALL: &str = include_str!("../../../tests/fixtures/gpu/rocm-smi-mi250-all.json");

    #[test]
    fn recorded_outputs() {
        // (fixture, index, name, vendor, type, uuid, total, used, core %, temperature)
        type Row = (u32, &'static str, GpuVendor, GpuType, Option<&'static str>, u64, u64, Option<f64>, Option<f64>);
        let cases: &[(&str, &str, Row)] = &[
            (
                "rx7800xt",
                RX7800XT,
                (
                    0,
                    "Navi 32 [Radeon RX 7700 XT / 7800 XT]",
                    GpuVendor::Amd,
                    GpuType::Rocm,
                    Some("5c88007d760374f3"),
                    17163091968,
                    11615076352,
                    Some(100.0),
                    Some(51.0),
                ),
            ),
            (
                "hygon",
                HYGON,
                (
                    0,
                    "K100_AI",
                    GpuVendor::Hygon,
                    GpuType::Dtk,
                    Some("a000000000000000"),
                    65520 * MIB,
                    2 * MIB,
                    Some(0.0),
                    Some(35.0),
                ),
            ),
            (
                "mi250 -a (no VRAM fields)",
                MI250_ALL,
                (
                    0,
                    "AMD INSTINCT MI250 (MCM) OAM AC MBA",
                    GpuVendor::Amd,
                    GpuType::Rocm,
                    Some("719d230578348e8c"),
                    0,
                    0,
                    Some(0.0),
                    Some(35.0),
                ),
            ),
        ];
        for (label, text, want) in cases {
            let devices = parse_rocm_smi_json(text).expect(label);
            assert_eq!(devices.len(), 1, "{label}");
            let d = &devices[0];
            let got = (
                d.index,
                d.name.as_str(),
                d.vendor,
                d.gpu_type,
                d.uuid.as_deref(),
                d.memory_total,
                d.memory_used,
                d.core_utilization_rate,
                d.temperature,
            );
            assert_eq!(&got, want, "{label}");
            assert!(!d.simulated);
        }
        let rx = &parse_rocm_smi_json(RX7800XT).expect("parse")[0];
        assert!((rx.memory_utilization_rate - 67.67).abs() < 0.01);
        assert_eq!(rx.id("w"), "w:rocm:0");
    }

    #[test]
    fn sorts_by_card_number_and_skips_other_entries() {
        let text = r#"{"card10": {"Card Series": "B", "VRAM Total Memory (B)": 1024},
                       "card2": {"Card Series": "A"},
                       "system": {"Driver version": "6.2.4"},
                       "cardX": {}}"#;
        let devices = parse_rocm_smi_json(text).expect("parse");
        let got: Vec<_> = devices.iter().map(|d| (d.index, d.name.as_str(), d.memory_total)).collect();
        assert_eq!(got, [(2, "A", 0), (10, "B", 1024)]);
    }

    #[test]
    fn errors_name_the_problem() {
        let cases = [
            ("", "cannot read rocm-smi output: not JSON"),
            ("[1,2]", "cannot read rocm-smi output: expected a JSON object of cards"),
            (r#"{"card0": 3}"#, "cannot read rocm-smi output: card0 is not an object"),
        ];
        for (input, want) in cases {
            let e = parse_rocm_smi_json(input).expect_err(input).to_string();
            assert!(e.starts_with(want), "{input:?}: {e}");
        }
        assert!(parse_rocm_smi_json("{}").expect("empty object").is_empty());
    }

    proptest! {
        #[test]
        fn never_panics(text in "\\PC{0,300}") {
            let _ = parse_rocm_smi_json(&text);
        }

        #[test]
        fn never_panics_on_odd_values(total in "\\PC{0,20}", used in "\\PC{0,20}", temp in "\\PC{0,10}") {
            let card = serde_json::json!({"card0": {
                "VRAM Total Memory (B)": total, "VRAM Total Used Memory (B)": used,
                "Temperature (Sensor edge) (C)": temp, "GPU use (%)": 1e308}});
            let _ = parse_rocm_smi_json(&card.to_string());
        }
    }
}
