//! The `Plan`: what the scheduler consumes. Every stage instance (a matrix expanded into one
//! instance per combination) in dependency order, with its dependencies as plan indices and
//! its `when` condition already compiled.

use std::sync::Arc;

use super::condition::Condition;
use super::model::{Pipeline, Stage};
use super::validate::Graph;

#[derive(Clone, Debug)]
pub struct Plan {
    pub pipeline: Arc<Pipeline>,
    /// Topologically ordered: every stage comes after all it needs.
    pub stages: Vec<PlannedStage>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedStage {
    /// Unique within the run: the stage name, with the matrix values for matrix instances
    /// (`test[os=linux,rust=1.80]`).
    pub key: String,
    /// Index into `pipeline.stages` (or `pipeline.finally` when `finally`).
    pub index: usize,
    pub finally: bool,
    /// This instance's matrix values, in axis order.
    pub matrix: Vec<(String, String)>,
    /// Plan indices this instance waits for. For finally stages, the regular stages are
    /// waited for whatever their outcome; other dependencies must succeed.
    pub needs: Vec<usize>,
}

impl Plan {
    /// Builds the plan of a pipeline that passed validation (so names resolve and the graph
    /// is acyclic).
    pub fn new(pipeline: Arc<Pipeline>) -> Plan {
        let mut sink = super::diagnostic::Sink::default();
        let graph = Graph::build(&pipeline, &mut sink);
        let order = topological_order(&graph);

        // Instances of each stage, as plan indices.
        let mut instances: Vec<Vec<usize>> = vec![Vec::new(); graph.stages.len()];
        let mut stages: Vec<PlannedStage> = Vec::new();
        for &s in &order {
            let stage = graph.stages[s];
            let finally = graph.is_finally(s);
            let mut needs: Vec<usize> = Vec::new();
            if finally {
                // The finally stages that wait for no other finally stage start when every
                // regular stage has ended.
                let waits_on_finally = graph.deps[s].iter().any(|&d| graph.is_finally(d));
                if !waits_on_finally {
                    needs.extend((0..graph.main_len).flat_map(|m| instances[m].iter().copied()));
                }
            }
            for &d in &graph.deps[s] {
                needs.extend(instances[d].iter().copied());
            }
            needs.sort_unstable();
            needs.dedup();
            for combo in combinations(stage) {
                let key = if combo.is_empty() {
                    stage.name.value.clone()
                } else {
                    let values: Vec<String> =
                        combo.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    format!("{}[{}]", stage.name.value, values.join(","))
                };
                instances[s].push(stages.len());
                stages.push(PlannedStage {
                    key,
                    index: if finally { s - graph.main_len } else { s },
                    finally,
                    matrix: combo,
                    needs: needs.clone(),
                });
            }
        }
        Plan { pipeline, stages }
    }

    pub fn stage(&self, planned: &PlannedStage) -> &Stage {
        if planned.finally {
            &self.pipeline.finally[planned.index]
        } else {
            &self.pipeline.stages[planned.index]
        }
    }

    pub fn when(&self, planned: &PlannedStage) -> Option<&Condition> {
        self.stage(planned).when.as_ref()
    }

    pub fn find(&self, key: &str) -> Option<usize> {
        self.stages.iter().position(|s| s.key == key)
    }
}

/// Kahn's algorithm, taking ready stages in the order written so plans are stable.
fn topological_order(graph: &Graph<'_>) -> Vec<usize> {
    let n = graph.stages.len();
    let mut remaining: Vec<usize> = graph.deps.iter().map(Vec::len).collect();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (s, deps) in graph.deps.iter().enumerate() {
        for &d in deps {
            dependents[d].push(s);
        }
    }
    // Finally stages also wait for every regular stage.
    for (s, waiting) in remaining.iter_mut().enumerate().skip(graph.main_len) {
        if !graph.deps[s].iter().any(|&d| graph.is_finally(d)) {
            *waiting += graph.main_len;
            for d in dependents.iter_mut().take(graph.main_len) {
                d.push(s);
            }
        }
    }
    let mut ready: std::collections::BTreeSet<usize> =
        (0..n).filter(|&s| remaining[s] == 0).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(s) = ready.pop_first() {
        order.push(s);
        for &t in &dependents[s] {
            remaining[t] -= 1;
            if remaining[t] == 0 {
                ready.insert(t);
            }
        }
    }
    order
}

/// Every combination of a stage's matrix in axis order, minus the excluded ones. A stage
/// without a matrix has one empty combination.
pub(crate) fn combinations(stage: &Stage) -> Vec<Vec<(String, String)>> {
    let Some(matrix) = &stage.matrix else {
        return vec![Vec::new()];
    };
    let mut combos: Vec<Vec<(String, String)>> = vec![Vec::new()];
    for (axis, values) in &matrix.axes {
        combos = combos
            .into_iter()
            .flat_map(|combo| {
                values.iter().map(move |v| {
                    let mut c = combo.clone();
                    c.push((axis.value.clone(), v.value.clone()));
                    c
                })
            })
            .collect();
    }
    combos.retain(|combo| {
        !matrix.exclude.iter().any(|excluded| {
            !excluded.value.is_empty() && excluded.value.iter().all(|pair| combo.contains(pair))
        })
    });
    combos
}
