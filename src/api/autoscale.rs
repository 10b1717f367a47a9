//! Wire types for scaling a deployment: `autoscaling` (ours: with demand, down to zero) and
//! GPUStack 2.3's `scaling_schedule` (cron windows of replicas), with GPUStack's field names.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

fn one() -> u32 {
    1
}

fn four() -> u32 {
    4
}

fn five_minutes() -> u32 {
    300
}

/// Scale a deployment's `replicas` with demand (docs/autoscaling.md). Absent: off, `replicas` is
/// the user's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Autoscaling {
    /// Fewest replicas; 0 = scale to zero when idle (the first request wakes it). Default 1.
    #[serde(default = "one")]
    pub min_replicas: u32,
    /// Most replicas (at most 1024).
    pub max_replicas: u32,
    /// In-flight (and queued) requests per ready replica the scaler aims at. Default 4.
    #[serde(default = "four")]
    pub target_requests: u32,
    /// Quiet time before a replica (or the last one) is removed: the scaler scales down to the
    /// most that demand asked for during this time. Default 300.
    #[serde(default = "five_minutes")]
    pub scale_down_delay_seconds: u32,
    /// With `min_replicas` 0: the last replica is parked instead of stopped, for this long, before
    /// it stops: withdrawn from routing, its engine kept (vLLM: in its sleep mode, weights in CPU
    /// memory); a request wakes it in place, in about a second instead of a cold start. Absent:
    /// the last replica stops at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub park_seconds: Option<u32>,
}

/// GPUStack's `ScalingSchedule`: cron-driven replicas. A rule's window opens when `start_cron`
/// fires and stays open for `duration_seconds`; while one is open the deployment runs that rule's
/// `replicas` (overlapping windows: the most recently opened wins, ties the larger count);
/// outside every window `baseline_replicas`. With `autoscaling` on, an open window's `replicas`
/// is the scaler's floor instead. Crons are evaluated in UTC.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScalingSchedule {
    #[serde(default)]
    pub enabled: bool,
    /// Suspends the schedule without losing it.
    #[serde(default)]
    pub paused: bool,
    /// Replicas outside every window; required while enabled.
    #[serde(default)]
    pub baseline_replicas: Option<u32>,
    #[serde(default)]
    pub rules: Vec<ScalingScheduleRule>,
}

/// GPUStack's `ScalingScheduleRule`: one window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScalingScheduleRule {
    /// Five-field cron (minute hour day-of-month month day-of-week) opening the window, e.g.
    /// `"0 8 * * 1-5"`; required while the schedule is enabled.
    #[serde(default)]
    pub start_cron: String,
    /// How long the window stays open, 1 s to 366 days; required while the schedule is enabled.
    #[serde(default)]
    pub duration_seconds: Option<u32>,
    pub replicas: u32,
    #[serde(default)]
    pub name: Option<String>,
}

/// GPUStack's cap on a window: a year (366 days).
pub const MAX_WINDOW_SECONDS: u32 = 366 * 24 * 3600;
