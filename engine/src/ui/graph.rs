//! The run page's stage graph: lays a plan's DAG out in columns (a stage's column is the
//! length of the longest chain of stages it needs) and gives the SVG template boxes and edges
//! to draw. Pure, so the layout is tested without a browser.

use serde::Serialize;

pub const NODE_W: u32 = 168;
pub const NODE_H: u32 = 44;
const GAP_X: u32 = 56;
const GAP_Y: u32 = 16;
const MARGIN: u32 = 8;

/// One stage's box.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Node {
    pub index: usize,
    pub key: String,
    pub column: usize,
    pub x: u32,
    pub y: u32,
}

/// A line from a stage to one that needs it, as an SVG path (`d`).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Edge {
    pub from: usize,
    pub to: usize,
    pub path: String,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Layout {
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
    pub width: u32,
    pub height: u32,
    pub node_w: u32,
    pub node_h: u32,
}

/// Lays out stages given as (key, needs by index), in plan order (every stage after all it
/// needs, as `Plan` guarantees; a need pointing forward is ignored rather than looping).
pub fn layout(stages: &[(String, Vec<usize>)]) -> Layout {
    let mut column = vec![0usize; stages.len()];
    for (i, (_, needs)) in stages.iter().enumerate() {
        column[i] = needs
            .iter()
            .filter(|&&n| n < i)
            .map(|&n| column[n] + 1)
            .max()
            .unwrap_or(0);
    }
    let mut rows_in = vec![0u32; column.iter().max().map_or(0, |m| m + 1)];
    let step_x = NODE_W + GAP_X;
    let step_y = NODE_H + GAP_Y;
    let nodes: Vec<Node> = stages
        .iter()
        .enumerate()
        .map(|(index, (key, _))| {
            let c = column[index];
            let row = rows_in[c];
            rows_in[c] += 1;
            Node {
                index,
                key: key.clone(),
                column: c,
                x: MARGIN + u32::try_from(c).unwrap_or(u32::MAX / step_x) * step_x,
                y: MARGIN + row * step_y,
            }
        })
        .collect();
    let mut edges = Vec::new();
    for (to, (_, needs)) in stages.iter().enumerate() {
        for &from in needs.iter().filter(|&&n| n < to) {
            let (a, b) = (&nodes[from], &nodes[to]);
            let (x1, y1) = (a.x + NODE_W, a.y + NODE_H / 2);
            let (x2, y2) = (b.x, b.y + NODE_H / 2);
            let mid = (x1 + x2) / 2;
            edges.push(Edge {
                from,
                to,
                path: format!("M{x1},{y1} C{mid},{y1} {mid},{y2} {x2},{y2}"),
            });
        }
    }
    let columns = u32::try_from(rows_in.len()).unwrap_or(0);
    let rows = rows_in.iter().copied().max().unwrap_or(0);
    Layout {
        width: 2 * MARGIN + columns.saturating_mul(step_x).saturating_sub(GAP_X),
        height: 2 * MARGIN + rows.saturating_mul(step_y).saturating_sub(GAP_Y),
        nodes,
        edges,
        node_w: NODE_W,
        node_h: NODE_H,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stages(list: &[(&str, &[usize])]) -> Vec<(String, Vec<usize>)> {
        list.iter()
            .map(|(k, n)| ((*k).to_owned(), n.to_vec()))
            .collect()
    }

    #[test]
    fn a_stage_sits_one_column_right_of_the_furthest_stage_it_needs() {
        // build -> (test, lint) -> deploy, and docs needing nothing.
        let l = layout(&stages(&[
            ("build", &[]),
            ("test", &[0]),
            ("lint", &[0]),
            ("docs", &[]),
            ("deploy", &[1, 2, 0]),
        ]));
        let columns: Vec<(&str, usize)> =
            l.nodes.iter().map(|n| (n.key.as_str(), n.column)).collect();
        assert_eq!(
            columns,
            vec![
                ("build", 0),
                ("test", 1),
                ("lint", 1),
                ("docs", 0),
                ("deploy", 2)
            ]
        );
        // Stacked within a column, no two boxes overlap.
        assert_eq!(l.nodes[1].x, l.nodes[2].x);
        assert_eq!(l.nodes[2].y - l.nodes[1].y, NODE_H + GAP_Y);
        assert_eq!(l.edges.len(), 5);
        // Every box fits in the drawing.
        for n in &l.nodes {
            assert!(n.x + NODE_W <= l.width && n.y + NODE_H <= l.height, "{n:?}");
        }
        let e = &l.edges[0];
        assert_eq!((e.from, e.to), (0, 1));
        assert!(e.path.starts_with(&format!("M{},", l.nodes[0].x + NODE_W)));
    }

    #[test]
    fn an_empty_plan_is_an_empty_drawing_and_forward_needs_are_ignored() {
        let l = layout(&[]);
        assert!(l.nodes.is_empty() && l.edges.is_empty());
        let l = layout(&stages(&[("a", &[1]), ("b", &[])]));
        assert_eq!(l.nodes[0].column, 0);
        assert!(l.edges.is_empty());
    }
}
