//! The scheduler: binds pending pods to the instance's nodes (the API server creates them, one
//! or more per zone), honouring `nodeName`, `nodeSelector`, required node affinity and the zones
//! of the pod's volumes: a bound claim's PV node affinity, an unbound WaitForFirstConsumer
//! claim's StorageClass `allowedTopologies`. Among the fitting nodes it picks the least loaded.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::volumes::{ZONE_LABEL, claim_class, class_zones, volume_zones, waits_for_consumer};
use super::{
    Controller, Error, Kind, Objects, expression_matches, is_deleting, labels, name, namespace,
    pod_finished, str_list,
};

const COMPONENT: &str = "default-scheduler";

/// See the module doc.
pub(crate) struct Scheduler;

impl Controller for Scheduler {
    const NAME: &'static str = "scheduler";

    fn watches(&self) -> &'static [Kind] {
        &[Kind::Pod, Kind::Node, Kind::Pvc, Kind::Pv]
    }

    async fn pass(&mut self, objects: &Objects) -> Result<(), Error> {
        let nodes: Vec<Value> = objects
            .list(Kind::Node, None)
            .await?
            .into_iter()
            .filter(|n| n["spec"]["unschedulable"] != true && !is_deleting(n))
            .collect();
        let pods = objects.list(Kind::Pod, None).await?;
        let mut load: HashMap<String, usize> = HashMap::new();
        for pod in &pods {
            if let Some(node) = pod["spec"]["nodeName"].as_str()
                && !pod_finished(pod)
            {
                *load.entry(node.to_owned()).or_default() += 1;
            }
        }
        let mut result = Ok(());
        for pod in &pods {
            let unbound = pod["spec"]["nodeName"].as_str().is_none_or(str::is_empty);
            if !unbound || is_deleting(pod) || pod_finished(pod) {
                continue;
            }
            match schedule(objects, pod, &nodes, &mut load).await {
                Ok(()) => {}
                Err(e) => result = Err(e),
            }
        }
        result
    }
}

async fn schedule(
    objects: &Objects,
    pod: &Value,
    nodes: &[Value],
    load: &mut HashMap<String, usize>,
) -> Result<(), Error> {
    let zones = match volume_constraint(objects, pod).await? {
        Ok(zones) => zones,
        Err(why) => return unschedulable(objects, pod, &why).await,
    };
    let fitting: Vec<&Value> = nodes
        .iter()
        .filter(|n| node_fits(pod, n))
        .filter(|n| {
            zones.as_ref().is_none_or(|zs| {
                n["metadata"]["labels"][ZONE_LABEL]
                    .as_str()
                    .is_some_and(|z| zs.iter().any(|w| w == z))
            })
        })
        .collect();
    let Some(node) = fitting
        .iter()
        .min_by_key(|n| (load.get(name(n)).copied().unwrap_or(0), name(n).to_owned()))
    else {
        let why = match &zones {
            Some(zs) => format!(
                "0/{} nodes are available: {} node(s) had volume node affinity conflict or did not match the pod's node selector (volume zones: {}).",
                nodes.len(),
                nodes.len(),
                zs.join(", ")
            ),
            None => format!(
                "0/{} nodes are available: {} node(s) didn't match Pod's node affinity/selector.",
                nodes.len(),
                nodes.len()
            ),
        };
        return unschedulable(objects, pod, &why).await;
    };
    let node_name = name(node).to_owned();
    let mut bound = pod.clone();
    bound["spec"]["nodeName"] = json!(node_name);
    let bound = objects.update(Kind::Pod, bound).await?;
    *load.entry(node_name.clone()).or_default() += 1;
    objects.modify_status(Kind::Pod, pod, |p| {
        set_scheduled(
            p,
            json!({"type": "PodScheduled", "status": "True", "lastTransitionTime": super::now()}),
        );
    }).await?;
    let ns = namespace(pod).unwrap_or("default");
    let msg = format!("Successfully assigned {ns}/{} to {node_name}", name(pod));
    tracing::debug!("{msg}");
    objects
        .event(Kind::Pod, &bound, false, "Scheduled", &msg, COMPONENT)
        .await
}

/// Replaces the PodScheduled condition in a pod's status.
fn set_scheduled(pod: &mut Value, cond: Value) {
    if !pod["status"].is_object() {
        pod["status"] = json!({});
    }
    let mut conds: Vec<Value> = pod["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    conds.retain(|c| c["type"] != "PodScheduled");
    conds.push(cond);
    pod["status"]["conditions"] = json!(conds);
    if pod["status"]["phase"].is_null() {
        pod["status"]["phase"] = json!("Pending");
    }
}

/// Records why a pod cannot be scheduled: its PodScheduled condition and a FailedScheduling
/// Event (each written once per distinct reason).
async fn unschedulable(objects: &Objects, pod: &Value, why: &str) -> Result<(), Error> {
    let already = pod["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "PodScheduled" && c["message"] == why)
    });
    if !already {
        objects
            .modify_status(Kind::Pod, pod, |p| {
                set_scheduled(
                    p,
                    json!({"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                       "message": why, "lastTransitionTime": super::now()}),
                );
            })
            .await?;
    }
    objects
        .event(Kind::Pod, pod, true, "FailedScheduling", why, COMPONENT)
        .await
}

/// The zones the pod's volumes allow: Ok(None) when they do not restrict it, Err(reason) when the
/// pod cannot be scheduled yet.
async fn volume_constraint(
    objects: &Objects,
    pod: &Value,
) -> Result<Result<Option<Vec<String>>, String>, Error> {
    let ns = namespace(pod).unwrap_or("default");
    let mut zones: Option<Vec<String>> = None;
    let mut restrict = |allowed: Vec<String>| {
        zones = Some(match zones.take() {
            None => allowed,
            Some(z) => z.into_iter().filter(|x| allowed.contains(x)).collect(),
        });
    };
    for vol in pod["spec"]["volumes"].as_array().into_iter().flatten() {
        let Some(claim) = vol["persistentVolumeClaim"]["claimName"].as_str() else {
            continue;
        };
        let Some(pvc) = objects.get(Kind::Pvc, Some(ns), claim).await? else {
            return Ok(Err(format!("persistentvolumeclaim {claim:?} not found")));
        };
        if is_deleting(&pvc) {
            return Ok(Err(format!(
                "persistentvolumeclaim {claim:?} is being deleted"
            )));
        }
        if let Some(volume) = pvc["spec"]["volumeName"].as_str().filter(|v| !v.is_empty()) {
            if let Some(pv) = objects.get(Kind::Pv, None, volume).await?
                && let Some(z) = volume_zones(&pv)
            {
                restrict(z);
            }
            continue;
        }
        match claim_class(objects, &pvc).await? {
            Ok(Some(class)) if waits_for_consumer(&class) => {
                match class_zones(&class, &objects.config().zones) {
                    Ok(z) => restrict(z),
                    Err(why) => return Ok(Err(why)),
                }
            }
            _ => {
                return Ok(Err(
                    "0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims."
                        .to_owned(),
                ));
            }
        }
    }
    Ok(Ok(zones))
}

/// Returns true if and only if the node satisfies the pod's nodeName, nodeSelector and required
/// node affinity.
pub(crate) fn node_fits(pod: &Value, node: &Value) -> bool {
    let node_labels = labels(&node["metadata"]);
    let selector_ok = pod["spec"]["nodeSelector"]
        .as_object()
        .is_none_or(|sel| sel.iter().all(|(k, v)| node_labels.get(k) == Some(v)));
    let terms = pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        .as_array();
    // Terms are ORed, the expressions of one term ANDed.
    let affinity_ok = terms.is_none_or(|terms| {
        terms.is_empty()
            || terms.iter().any(|t| {
                let exprs = t["matchExpressions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .all(|e| {
                        let key = e["key"].as_str().unwrap_or("");
                        let value = node_labels.get(key).and_then(Value::as_str);
                        expression_matches(
                            e["operator"].as_str().unwrap_or(""),
                            value,
                            &str_list(&e["values"]),
                        )
                    });
                let fields = t["matchFields"].as_array().into_iter().flatten().all(|e| {
                    let value = (e["key"] == "metadata.name").then(|| name(node));
                    expression_matches(
                        e["operator"].as_str().unwrap_or(""),
                        value,
                        &str_list(&e["values"]),
                    )
                });
                exprs && fields
            })
    });
    selector_ok && affinity_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_fit_selectors_and_required_affinity() {
        let node =
            json!({"metadata": {"name": "n1", "labels": {ZONE_LABEL: "eastus2-1", "disk": "ssd"}}});
        assert!(node_fits(&json!({"spec": {}}), &node));
        assert!(node_fits(
            &json!({"spec": {"nodeSelector": {"disk": "ssd"}}}),
            &node
        ));
        assert!(!node_fits(
            &json!({"spec": {"nodeSelector": {"disk": "hdd"}}}),
            &node
        ));
        let affinity = |zone: &str| {
            json!({"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": ZONE_LABEL, "operator": "In", "values": [zone]}]}]}}}}})
        };
        assert!(node_fits(&affinity("eastus2-1"), &node));
        assert!(!node_fits(&affinity("centralus-1"), &node));
    }
}
