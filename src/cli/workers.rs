//! `ferrostack maintenance`: puts a worker into maintenance or takes it out; with `--drain` its
//! instances are moved to other workers first, then drained (docs/draining.md).

use super::ClientArgs;
use crate::api::{Maintenance, Record, WorkerSpec};

/// Sets worker `name`'s maintenance: `on` (with `drain`: move its instances away) or off.
pub async fn maintenance(
    args: &ClientArgs,
    name: &str,
    on: bool,
    drain: bool,
    message: Option<String>,
) -> anyhow::Result<()> {
    let c = super::client(args);
    let workers = c.list::<Record<WorkerSpec>>("/v2/workers").await?;
    let worker = workers
        .items
        .into_iter()
        .find(|w| w.spec.name == name)
        .ok_or_else(|| anyhow::anyhow!("no worker named {name:?} (`ferrostack ps` lists where instances run)"))?;
    let maintenance = Maintenance { enabled: on, message, drain: on && drain, until_restart: false };
    let body = serde_json::json!({ "maintenance": maintenance });
    let updated: Record<WorkerSpec> = c.put(&format!("/v2/workers/{}", worker.id), &body).await?;
    match (updated.spec.maintenance.enabled, updated.spec.maintenance.drain) {
        (true, true) => println!("{name} is in maintenance; its instances move to other workers, then drain"),
        (true, false) => println!("{name} is in maintenance; its instances keep running, nothing new is placed there"),
        (false, _) => println!("{name} is out of maintenance"),
    }
    Ok(())
}
