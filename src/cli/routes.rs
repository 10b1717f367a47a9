//! `ferrostack routes …`: the model routes (the public model names clients call) and how each
//! spreads requests over its instances (`load_balancing`, docs/routing.md).

use anyhow::Context;
use clap::Subcommand;

use super::output::print_table;
use super::{ClientArgs, client};
use crate::api::{LoadBalancing, ModelRoute, ModelRouteCreate};
use crate::client::Client;

const BASE: &str = "/v2/model-routes";

#[derive(Subcommand, Debug)]
pub enum RoutesCmd {
    /// List routes: targets ready/total and load balancing.
    List(ClientArgs),
    /// Set how a route spreads requests over its instances (docs/routing.md).
    Balance {
        /// The route's name or id.
        route: String,
        /// The load-balancing policy.
        policy: Policy,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// A route's `load_balancing`, as the command line names it (the API's values).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
#[value(rename_all = "snake_case")]
pub enum Policy {
    /// Requests sharing a prompt prefix go to the instance whose prompt cache likely holds it (the default).
    PrefixAware,
    /// The instance with the fewest requests in flight.
    LeastOutstanding,
    /// Each instance in turn.
    RoundRobin,
}

impl From<Policy> for LoadBalancing {
    fn from(p: Policy) -> Self {
        match p {
            Policy::PrefixAware => LoadBalancing::PrefixAware,
            Policy::LeastOutstanding => LoadBalancing::LeastOutstanding,
            Policy::RoundRobin => LoadBalancing::RoundRobin,
        }
    }
}

/// The API's name of a policy.
fn policy_name(p: LoadBalancing) -> &'static str {
    match p {
        LoadBalancing::PrefixAware => "prefix_aware",
        LoadBalancing::LeastOutstanding => "least_outstanding",
        LoadBalancing::RoundRobin => "round_robin",
    }
}

pub async fn run(cmd: RoutesCmd) -> anyhow::Result<()> {
    match cmd {
        RoutesCmd::List(args) => {
            let list = client(&args).list::<ModelRoute>(BASE).await?;
            print_table(&["ID", "NAME", "TARGETS", "LOAD BALANCING"], list.items.iter().map(row));
            Ok(())
        }
        RoutesCmd::Balance { route, policy, client: args } => balance(&client(&args), &route, policy.into()).await,
    }
}

fn row(r: &ModelRoute) -> Vec<String> {
    vec![
        r.id.to_string(),
        r.spec.name.clone(),
        format!("{}/{}", r.spec.ready_targets, r.spec.targets),
        policy_name(r.spec.load_balancing).to_owned(),
    ]
}

/// The route named `route` (route names start with a letter, so a number is an id).
async fn find(c: &Client, route: &str) -> anyhow::Result<ModelRoute> {
    if let Ok(id) = route.parse::<i64>() {
        return Ok(c.get(&format!("{BASE}/{id}")).await?);
    }
    let list = c.list::<ModelRoute>(&format!("{BASE}?search={}", crate::client::urlencode(route))).await?;
    list.items
        .into_iter()
        .find(|r| r.spec.name.eq_ignore_ascii_case(route))
        .with_context(|| format!("no route named {route:?}; `ferrostack routes list` lists them"))
}

/// Sets a route's `load_balancing`. A PUT replaces the route's other editable fields with the
/// body's, so the body carries them back as the GET answered them (with its version: a change made
/// in between is a 409, not lost); its targets are left out and stay as they are.
async fn balance(c: &Client, route: &str, policy: LoadBalancing) -> anyhow::Result<()> {
    let current = find(c, route).await?;
    let s = current.spec;
    let body = ModelRouteCreate {
        name: s.name,
        description: s.description,
        categories: s.categories,
        meta: s.meta,
        generic_proxy: s.generic_proxy,
        access_policy: s.access_policy,
        timeout: s.timeout,
        load_balancing: Some(policy),
        targets: None,
        version: Some(current.version),
    };
    let updated: ModelRoute = c.put(&format!("{BASE}/{}", current.id), &body).await?;
    println!("route {}: load_balancing {}", updated.spec.name, policy_name(updated.spec.load_balancing));
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::ValueEnum;

    use super::*;

    #[test]
    fn the_command_line_names_the_apis_values() {
        for p in Policy::value_variants() {
            let cli = p.to_possible_value().map(|v| v.get_name().to_owned());
            let api = serde_json::to_value(LoadBalancing::from(*p)).ok();
            assert_eq!(cli.as_deref(), api.as_ref().and_then(|v| v.as_str()));
            assert_eq!(cli.as_deref(), Some(policy_name((*p).into())));
        }
    }
}
