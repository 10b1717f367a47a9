//! NVIDIA: the `nvidia-smi` CSV fallback parser, used when NVML cannot be loaded or fails.
//!
//! Input is the output of [`NVIDIA_SMI_ARGS`]: one line per GPU,
//! `index, name, uuid, memory.total, memory.used, utilization.gpu, temperature.gpu`, memory in MiB.
//! Unsupported fields print as `[N/A]` or `[Not Supported]` and become `None`.

use super::{GpuDevice, GpuError, GpuType, GpuVendor, MIB, parse_optional_f64};

/// The arguments [`parse_nvidia_smi_csv`] expects `nvidia-smi` to have been run with.
pub const NVIDIA_SMI_ARGS: &[&str] = &[
    "--query-gpu=index,name,uuid,memory.total,memory.used,utilization.gpu,temperature.gpu",
    "--format=csv,noheader,nounits",
];

const TOOL: &str = "nvidia-smi";
const FIELDS: usize = 7;

/// Parses `nvidia-smi --query-gpu=… --format=csv,noheader,nounits` output (see [`NVIDIA_SMI_ARGS`]).
/// Blank lines are skipped; any other line that does not have the seven fields is an error naming it.
pub fn parse_nvidia_smi_csv(text: &str) -> Result<Vec<GpuDevice>, GpuError> {
    let mut devices = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        devices.push(parse_line(line).map_err(|reason| GpuError::parse(TOOL, format!("line {}: {reason}", n + 1)))?);
    }
    Ok(devices)
}

fn parse_line(line: &str) -> Result<GpuDevice, String> {
    let cells: Vec<&str> = line.split(',').map(str::trim).collect();
    if cells.len() < FIELDS {
        return Err(format!("expected {FIELDS} comma-separated fields, found {}", cells.len()));
    }
    // A product name never contains a comma today, but if one did it would arrive split: rejoin it.
    let name_end = cells.len() - (FIELDS - 2);
    let name = cells[1..name_end].join(", ");
    let [uuid, total, used, util, temp] =
        [cells[name_end], cells[name_end + 1], cells[name_end + 2], cells[name_end + 3], cells[name_end + 4]];
    let index: u32 = cells[0].parse().map_err(|_| format!("index {:?} is not a number", cells[0]))?;
    if name.is_empty() {
        return Err("empty name".into());
    }
    let memory_total = mib(total).ok_or_else(|| format!("memory.total {total:?} is not a number of MiB"))?;
    let memory_used = mib(used).unwrap_or(0).min(memory_total);
    Ok(GpuDevice {
        index,
        name,
        vendor: GpuVendor::Nvidia,
        gpu_type: GpuType::Cuda,
        uuid: (!uuid.is_empty() && !uuid.contains("N/A")).then(|| uuid.to_string()),
        memory_total,
        memory_used,
        memory_utilization_rate: GpuDevice::utilization_rate(memory_used, memory_total),
        core_utilization_rate: parse_optional_f64(util),
        temperature: parse_optional_f64(temp),
        simulated: false,
        memory_external: 0,
    })
}

fn mib(cell: &str) -> Option<u64> {
    cell.parse::<u64>().ok()?.checked_mul(MIB)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const H100X8: &str = include_str!("../../../tests/fixtures/gpu/nvidia-smi-h100x8.csv");
    const MIXED: &str = include_str!("../../../tests/fixtures/gpu/nvidia-smi-mixed.csv");

    #[test]
    fn eight_h100s() {
        let devices = parse_nvidia_smi_csv(H100X8).expect("parse");
        assert_eq!(devices.len(), 8);
        let d = &devices[0];
        assert_eq!(d.index, 0);
        assert_eq!(d.name, "NVIDIA H100 80GB HBM3");
        assert_eq!(d.uuid.as_deref(), Some("GPU-3f2a9c1e-6b7d-4e21-9a0c-5d8e7f1b2c30"));
        assert_eq!(d.memory_total, 81559 * MIB);
        assert_eq!(d.memory_used, 74312 * MIB);
        assert_eq!(d.core_utilization_rate, Some(97.0));
        assert_eq!(d.temperature, Some(63.0));
        assert_eq!((d.vendor, d.gpu_type, d.simulated), (GpuVendor::Nvidia, GpuType::Cuda, false));
        assert!((d.memory_utilization_rate - 91.116).abs() < 0.01);
        assert_eq!(devices.iter().map(|d| d.index).collect::<Vec<_>>(), (0..8).collect::<Vec<_>>());
        assert_eq!(devices[7].id("node-a"), "node-a:cuda:7");
    }

    #[test]
    fn mixed_cards_and_unsupported_fields() {
        let devices = parse_nvidia_smi_csv(MIXED).expect("parse");
        let rows: Vec<_> = devices
            .iter()
            .map(|d| (d.name.as_str(), d.memory_total / MIB, d.core_utilization_rate, d.temperature))
            .collect();
        assert_eq!(
            rows,
            [
                ("NVIDIA GeForce RTX 4090", 24564, Some(12.0), Some(41.0)),
                ("NVIDIA A100-SXM4-40GB", 40960, None, None),
                ("Tesla T4", 15360, Some(0.0), None),
            ]
        );
    }

    #[test]
    fn table_of_lines() {
        type Want = Result<(u32, &'static str, u64), &'static str>;
        let cases: &[(&str, Want)] = &[
            ("", Ok((u32::MAX, "", 0))),
            ("3, NVIDIA L4, GPU-x, 23034, 0, 0, 30", Ok((3, "NVIDIA L4", 23034))),
            ("0, Odd, Name, GPU-x, 100, 1, 2, 3", Ok((0, "Odd, Name", 100))),
            ("0, NVIDIA L4, GPU-x, 23034, [N/A], [N/A], [N/A]", Ok((0, "NVIDIA L4", 23034))),
            ("0, NVIDIA L4, GPU-x, 23034", Err("line 1: expected 7 comma-separated fields, found 4")),
            ("x, NVIDIA L4, GPU-x, 1, 0, 0, 30", Err("line 1: index \"x\" is not a number")),
            ("0, NVIDIA L4, GPU-x, [N/A], 0, 0, 30", Err("line 1: memory.total \"[N/A]\" is not a number of MiB")),
            ("0, , GPU-x, 1, 0, 0, 30", Err("line 1: empty name")),
        ];
        for (input, want) in cases {
            let got = parse_nvidia_smi_csv(input);
            match (got, want) {
                (Ok(devices), Ok((u32::MAX, _, _))) => assert!(devices.is_empty(), "{input:?}"),
                (Ok(devices), Ok((index, name, total))) => {
                    assert_eq!(devices.len(), 1, "{input:?}");
                    assert_eq!((devices[0].index, devices[0].name.as_str()), (*index, *name), "{input:?}");
                    assert_eq!(devices[0].memory_total, total * MIB, "{input:?}");
                }
                (Err(e), Err(msg)) => assert_eq!(e.to_string(), format!("cannot read nvidia-smi output: {msg}")),
                (got, want) => panic!("{input:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    proptest! {
        #[test]
        fn never_panics(text in "\\PC{0,300}") {
            let _ = parse_nvidia_smi_csv(&text);
        }

        #[test]
        fn never_panics_on_near_miss_lines(fields in proptest::collection::vec("[0-9A-Za-z \\[\\]/.-]{0,12}", 0..10)) {
            let _ = parse_nvidia_smi_csv(&fields.join(","));
        }
    }
}
