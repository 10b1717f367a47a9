//! Huawei Ascend: parsers for `npu-smi info` (the device table) and `npu-smi info -m` (chip mapping).
//!
//! `npu-smi` has no machine-readable mode, so the table is read by its headers: each device takes two
//! rows (`NPU Name | Health | Power Temp Hugepages` and `Chip [Device] | Bus-Id | AICore Memory [HBM]`),
//! and a value sits under the header word at the same position inside its `|` cell (`a / b` pairs
//! count as one value). The process table that follows is ignored. The device index is the chip's
//! logic id from `npu-smi info -m` (what `ASCEND_RT_VISIBLE_DEVICES` takes), else the table's `Device`
//! column, else the order of appearance.

use std::collections::HashMap;

use super::{GpuDevice, GpuError, GpuType, GpuVendor, MIB, parse_optional_f64};

/// Arguments for the device table.
pub const NPU_SMI_INFO_ARGS: &[&str] = &["info"];
/// Arguments for the chip mapping.
pub const NPU_SMI_MAPPING_ARGS: &[&str] = &["info", "-m"];

const TOOL: &str = "npu-smi";

/// One line of `npu-smi info -m`: a chip, its logic id and its product name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NpuChip {
    pub npu_id: u32,
    pub chip_id: u32,
    pub logic_id: u32,
    /// e.g. `Ascend 910B3`.
    pub name: String,
}

/// Parses `npu-smi info -m`. Lines that are not `NPU CHIP LOGIC NAME…` with numeric ids (the header,
/// `Mcu` chips whose logic id is `-`) are skipped.
pub fn parse_npu_smi_mapping(text: &str) -> Vec<NpuChip> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let npu_id = words.next()?.parse().ok()?;
            let chip_id = words.next()?.parse().ok()?;
            let logic_id = words.next()?.parse().ok()?;
            let name = words.collect::<Vec<_>>().join(" ");
            Some(NpuChip { npu_id, chip_id, logic_id, name })
        })
        .collect()
}

/// Parses `npu-smi info`; `mapping` is the output of [`parse_npu_smi_mapping`] when available.
/// Output without the device table's header is an error; a table with no devices is not.
pub fn parse_npu_smi_info(text: &str, mapping: &[NpuChip]) -> Result<Vec<GpuDevice>, GpuError> {
    let by_chip: HashMap<(u32, u32), &NpuChip> = mapping.iter().map(|c| ((c.npu_id, c.chip_id), c)).collect();
    let mut header1: Option<Vec<Vec<String>>> = None;
    let mut header2: Option<Vec<Vec<String>>> = None;
    let mut pending: Option<(usize, Row1)> = None;
    let mut devices = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        let err = |reason: String| GpuError::parse(TOOL, format!("line {}: {reason}", n + 1));
        if !line.starts_with('|') {
            if line.starts_with('+')
                && let Some((row, _)) = pending.take()
            {
                return Err(GpuError::parse(TOOL, format!("line {}: device row has no second row", row + 1)));
            }
            continue;
        }
        if line.contains("Process id") || line.contains("Process name") {
            break;
        }
        let cells: Vec<&str> = line.trim_matches('|').split('|').collect();
        let (Some(h1), Some(h2)) = (&header1, &header2) else {
            if header1.is_none() {
                if line.contains("Health") && line.contains("NPU") {
                    header1 = Some(cells.iter().map(|c| header_words(c)).collect());
                }
            } else {
                header2 = Some(cells.iter().map(|c| header_words(c)).collect());
            }
            continue;
        };
        match pending.take() {
            None => pending = Some((n, parse_row1(h1, &cells).map_err(err)?)),
            Some((_, row1)) => {
                let row2 = parse_row2(h2, &cells).map_err(err)?;
                devices.push(device(row1, row2, devices.len(), &by_chip));
            }
        }
    }
    if header2.is_none() {
        return Err(GpuError::parse(TOOL, "no device table header (`NPU Name | Health | …`) found"));
    }
    if let Some((row, _)) = pending {
        return Err(GpuError::parse(TOOL, format!("line {}: device row has no second row", row + 1)));
    }
    Ok(devices)
}

/// The process table at the end of `npu-smi info` (`NPU Chip | Process id | Process name |
/// Process memory(MB)`), as (device index, pid, bytes); the index is the chip's logic id from
/// `mapping`, else the NPU id. Rows that are not a process (`No running processes found…`) are
/// skipped.
pub fn parse_npu_smi_processes(text: &str, mapping: &[NpuChip]) -> Vec<super::external::GpuProcess> {
    let by_chip: HashMap<(u32, u32), u32> = mapping.iter().map(|c| ((c.npu_id, c.chip_id), c.logic_id)).collect();
    let mut out = Vec::new();
    let mut in_table = false;
    for line in text.lines().map(str::trim) {
        if line.contains("Process id") {
            in_table = true;
            continue;
        }
        if !in_table || !line.starts_with('|') {
            continue;
        }
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let [ids, pid, _, mb, ..] = cells.as_slice() else { continue };
        let mut words = ids.split_whitespace().map(str::parse::<u32>);
        let (Some(Ok(npu)), Some(Ok(chip)), Ok(pid), Ok(mb)) =
            (words.next(), words.next(), pid.parse(), mb.parse::<u64>())
        else {
            continue;
        };
        let index = by_chip.get(&(npu, chip)).copied().unwrap_or(npu);
        out.push(super::external::GpuProcess { index, pid, bytes: mb.saturating_mul(MIB) });
    }
    out
}

/// First row of a device: `NPU Name | Health | Power(W) Temp(C) Hugepages-Usage(page)`.
struct Row1 {
    npu_id: u32,
    name: String,
    temperature: Option<f64>,
}

/// Second row: `Chip [Device] | Bus-Id | AICore(%) Memory-Usage(MB) [HBM-Usage(MB)]`.
struct Row2 {
    chip_id: u32,
    device_id: Option<u32>,
    core: Option<f64>,
    memory: Option<(u64, u64)>,
    hbm: Option<(u64, u64)>,
}

fn parse_row1(header: &[Vec<String>], cells: &[&str]) -> Result<Row1, String> {
    let first: Vec<&str> = cells.first().map(|c| c.split_whitespace().collect()).unwrap_or_default();
    let npu_id = first.first().ok_or("empty NPU cell")?;
    let npu_id = npu_id.parse().map_err(|_| format!("NPU id {npu_id:?} is not a number"))?;
    let name = first[1..].join(" ");
    if name.is_empty() {
        return Err("no device name".into());
    }
    let temperature = lookup(header, cells, "Temp(C)").and_then(|v| parse_optional_f64(&v));
    Ok(Row1 { npu_id, name, temperature })
}

fn parse_row2(header: &[Vec<String>], cells: &[&str]) -> Result<Row2, String> {
    let first: Vec<&str> = cells.first().map(|c| c.split_whitespace().collect()).unwrap_or_default();
    let chip_id = first.first().ok_or("empty Chip cell")?;
    let chip_id = chip_id.parse().map_err(|_| format!("Chip id {chip_id:?} is not a number"))?;
    let has_device = header.first().is_some_and(|h| h.iter().any(|w| w == "Device"));
    let device_id = if has_device { first.get(1).and_then(|d| d.parse().ok()) } else { None };
    Ok(Row2 {
        chip_id,
        device_id,
        core: lookup(header, cells, "AICore(%)").and_then(|v| parse_optional_f64(&v)),
        memory: lookup(header, cells, "Memory-Usage(MB)").and_then(|v| fraction(&v)),
        hbm: lookup(header, cells, "HBM-Usage(MB)").and_then(|v| fraction(&v)),
    })
}

fn device(row1: Row1, row2: Row2, seen: usize, by_chip: &HashMap<(u32, u32), &NpuChip>) -> GpuDevice {
    let mapped = by_chip.get(&(row1.npu_id, row2.chip_id));
    let index = mapped.map(|c| c.logic_id).or(row2.device_id).unwrap_or(seen as u32);
    let name = match mapped {
        Some(c) if !c.name.is_empty() => c.name.clone(),
        _ if row1.name.starts_with("Ascend") => row1.name,
        _ => format!("Ascend {}", row1.name),
    };
    // 910-series report device memory as HBM; older cards (310) only have Memory-Usage.
    let (used, total) = match (row2.hbm, row2.memory) {
        (Some(hbm), _) if hbm.1 > 0 => hbm,
        (_, Some(memory)) => memory,
        (hbm, None) => hbm.unwrap_or((0, 0)),
    };
    let memory_total = total.saturating_mul(MIB);
    let memory_used = used.saturating_mul(MIB).min(memory_total);
    GpuDevice {
        index,
        name,
        vendor: GpuVendor::Ascend,
        gpu_type: GpuType::Cann,
        uuid: None,
        memory_total,
        memory_used,
        memory_utilization_rate: GpuDevice::utilization_rate(memory_used, memory_total),
        core_utilization_rate: row2.core,
        temperature: row1.temperature,
        simulated: false,
        memory_external: 0,
    }
}

fn header_words(cell: &str) -> Vec<String> {
    cell.split_whitespace().map(str::to_string).collect()
}

/// Value words of a cell, with `a / b`, `a/ b` and `a /b` joined into one word `a/b`.
fn value_words(cell: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut join_next = false;
    for word in cell.split_whitespace() {
        match out.last_mut() {
            Some(last) if join_next || word.starts_with('/') => last.push_str(word),
            _ => out.push(word.to_string()),
        }
        join_next = word.ends_with('/');
    }
    out
}

/// The value under `key` in the cell whose header contains it.
fn lookup(header: &[Vec<String>], cells: &[&str], key: &str) -> Option<String> {
    let (cell, pos) =
        header.iter().enumerate().find_map(|(c, words)| Some((c, words.iter().position(|w| w == key)?)))?;
    value_words(cells.get(cell)?).into_iter().nth(pos)
}

/// `used/total` in MB.
fn fraction(value: &str) -> Option<(u64, u64)> {
    let (used, total) = value.split_once('/')?;
    Some((used.trim().parse().ok()?, total.trim().parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::super::external::GpuProcess;
    use super::*;
    use proptest::prelude::*;

    const B1X8: &str = include_str!("../../../tests/fixtures/gpu/npu-smi-910b1x8.txt");
    const B3X2: &str = include_str!("../../../tests/fixtures/gpu/npu-smi-910b3x2.txt");
    const B3X2_M: &str = include_str!("../../../tests/fixtures/gpu/npu-smi-910b3x2-m.txt");
    const A_DOC: &str = include_str!("../../../tests/fixtures/gpu/npu-smi-910a-doc.txt");
    const A_DOC_M: &str = include_str!("../../../tests/fixtures/gpu/npu-smi-910a-doc-m.txt");
    const P310_DOC: &str = include_str!("../../../tests/fixtures/gpu/npu-smi-310-doc.txt");

    /// (index, name, used MiB, total MiB, AICore %, temperature)
    type Row<'a> = (u32, &'a str, u64, u64, Option<f64>, Option<f64>);

    fn rows(devices: &[GpuDevice]) -> Vec<Row<'_>> {
        devices
            .iter()
            .map(|d| {
                (
                    d.index,
                    d.name.as_str(),
                    d.memory_used / MIB,
                    d.memory_total / MIB,
                    d.core_utilization_rate,
                    d.temperature,
                )
            })
            .collect()
    }

    #[test]
    fn recorded_tables() {
        let cases: &[(&str, &str, &str, usize, Row<'static>, Row<'static>)] = &[
            (
                "8 x 910B1, no mapping",
                B1X8,
                "",
                8,
                (0, "Ascend 910B1", 3395, 65536, Some(0.0), Some(50.0)),
                (7, "Ascend 910B1", 3403, 65536, Some(0.0), Some(50.0)),
            ),
            (
                "2 x 910B3 with mapping, `41697/ 65536` spacing, processes after",
                B3X2,
                B3X2_M,
                2,
                (0, "Ascend 910B3", 41697, 65536, Some(0.0), Some(32.0)),
                (1, "Ascend 910B3", 40844, 65536, Some(0.0), Some(33.0)),
            ),
            (
                "910A doc: DDR and HBM columns, HBM wins",
                A_DOC,
                A_DOC_M,
                4,
                (0, "Ascend 910A", 0, 32768, Some(0.0), Some(42.0)),
                (3, "Ascend 910A", 0, 32768, Some(0.0), Some(39.0)),
            ),
            (
                "310 doc: four chips on NPU 6, Device column, no HBM",
                P310_DOC,
                "",
                4,
                (3, "Ascend 310", 2703, 8192, Some(0.0), Some(73.0)),
                (6, "Ascend 310", 2867, 8192, Some(0.0), Some(65.0)),
            ),
        ];
        for (label, info, mapping, count, first, last) in cases {
            let devices = parse_npu_smi_info(info, &parse_npu_smi_mapping(mapping)).expect(label);
            let got = rows(&devices);
            assert_eq!(got.len(), *count, "{label}");
            assert_eq!(&got[0], first, "{label}");
            assert_eq!(got.last(), Some(last), "{label}");
            assert!(
                devices.iter().all(|d| d.vendor == GpuVendor::Ascend && d.gpu_type == GpuType::Cann && !d.simulated)
            );
        }
        let devices = parse_npu_smi_info(B1X8, &[]).expect("parse");
        assert_eq!(devices.iter().map(|d| d.index).collect::<Vec<_>>(), (0..8).collect::<Vec<_>>());
        assert_eq!(devices[2].id("ascend-1"), "ascend-1:cann:2");
    }

    #[test]
    fn process_tables() {
        let g = |index, pid, mb: u64| GpuProcess { index, pid, bytes: mb * MIB };
        let cases: [(&str, &str, &str, Vec<GpuProcess>); 4] = [
            ("910B3 × 2", B3X2, B3X2_M, vec![g(0, 111, 37974), g(1, 222, 37286)]),
            ("910B3 × 2, no mapping", B3X2, "", vec![g(0, 111, 37974), g(1, 222, 37286)]),
            ("910A doc", A_DOC, A_DOC_M, vec![g(0, 37656, 686), g(1, 37665, 686)]),
            (
                "no processes",
                "| NPU Chip | Process id | Process name | Process memory(MB) |\n| No running processes found in NPU 0 |",
                "",
                vec![],
            ),
        ];
        for (what, info, m, want) in cases {
            let got = parse_npu_smi_processes(info, &parse_npu_smi_mapping(m));
            assert_eq!(got, want, "{what}");
        }
    }

    #[test]
    fn mapping_skips_header_and_mcu_chips() {
        let text = "NPU ID   Chip ID   Chip Logic ID   Chip Name\n3   0   0   Ascend 910B3\n3   1   -   Mcu\n4   0   1   Ascend 910B3\n";
        let chips = parse_npu_smi_mapping(text);
        assert_eq!(
            chips,
            [
                NpuChip { npu_id: 3, chip_id: 0, logic_id: 0, name: "Ascend 910B3".into() },
                NpuChip { npu_id: 4, chip_id: 0, logic_id: 1, name: "Ascend 910B3".into() },
            ]
        );
    }

    #[test]
    fn mapping_gives_logic_ids_to_npu_numbers() {
        // NPU ids 3 and 4 are logic ids 0 and 1 (a host whose first NPUs are reserved).
        let info = B3X2.replace("| 0     910B3", "| 3     910B3").replace("| 1     910B3", "| 4     910B3");
        let mapping = parse_npu_smi_mapping("3 0 0 Ascend 910B3\n4 0 1 Ascend 910B3\n");
        let devices = parse_npu_smi_info(&info, &mapping).expect("parse");
        assert_eq!(devices.iter().map(|d| d.index).collect::<Vec<_>>(), [0, 1]);
    }

    #[test]
    fn errors_name_the_line() {
        let header = "| NPU   Name | Health | Power(W) Temp(C) Hugepages-Usage(page)|\n| Chip | Bus-Id | AICore(%) Memory-Usage(MB) HBM-Usage(MB) |\n+===+\n";
        let cases = [
            ("", "no device table header"),
            ("command not found\n", "no device table header"),
            (&*format!("{header}| x 910B | OK | 1 2 0 / 0 |\n"), "line 4: NPU id \"x\" is not a number"),
            (&*format!("{header}| 0 | OK | 1 2 0 / 0 |\n"), "line 4: no device name"),
            (&*format!("{header}| 0 910B | OK | 1 2 0 / 0 |\n+===+\n"), "line 4: device row has no second row"),
            (&*format!("{header}| 0 910B | OK | 1 2 0 / 0 |\n| c | b | 0 0 / 0 1 / 2 |\n"), "line 5: Chip id \"c\""),
        ];
        for (input, want) in cases {
            let e = parse_npu_smi_info(input, &[]).expect_err(input).to_string();
            assert!(e.contains(want), "{input:?}: {e}");
        }
        let empty = format!("{header}+---+\n| NPU Chip | Process id | Process name | Process memory(MB) |\n");
        assert!(parse_npu_smi_info(&empty, &[]).expect("no devices").is_empty());
    }

    #[test]
    fn value_words_join_fractions() {
        assert_eq!(value_words("0   0 / 0   41697/ 65536  1 /2"), ["0", "0/0", "41697/65536", "1/2"]);
        assert_eq!(value_words("/ 3"), ["/3"]);
        assert!(value_words("   ").is_empty());
    }

    proptest! {
        #[test]
        fn never_panics(text in "\\PC{0,400}") {
            let _ = parse_npu_smi_info(&text, &parse_npu_smi_mapping(&text));
            let _ = parse_npu_smi_processes(&text, &parse_npu_smi_mapping(&text));
        }

        #[test]
        fn never_panics_on_table_like_rows(rows in proptest::collection::vec("[|+0-9A-Za-z /().%-]{0,40}", 0..8)) {
            let text = format!("{}\n{}", B3X2.lines().take(5).collect::<Vec<_>>().join("\n"), rows.join("\n"));
            let _ = parse_npu_smi_info(&text, &[]);
            let procs = format!("| NPU Chip | Process id | Process name | Process memory(MB) |\n{}", rows.join("\n"));
            let _ = parse_npu_smi_processes(&procs, &[]);
        }
    }
}
