//! The experiment's graph as an SVG drawing: one box per step, laid out in columns by depth, with
//! a small square per instance coloured by its state, and edges where one step reads another.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{anyhow, Result};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::state::State;
use crate::experiment::Plan;

const FONT: &str = "sans-serif";
const BOX_W: i32 = 210;
const COL_GAP: i32 = 70;
const ROW_GAP: i32 = 18;
const CELL: i32 = 12;
const PER_ROW: i32 = 15;
const HEADER: i32 = 40;
const TOP: i32 = 46;
const LEFT: i32 = 16;
const LANE: i32 = 6;

fn draw_err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("drawing the graph: {e}")
}

struct StepBox {
    step: String,
    kind: String,
    members: Vec<usize>,
    x: i32,
    y: i32,
    h: i32,
}

/// Step ids each step reads from.
fn step_edges(plan: &Plan) -> BTreeSet<(String, String)> {
    plan.instances
        .iter()
        .flat_map(|inst| {
            inst.inputs.values().map(|input| {
                (
                    plan.instances[input.instance].step.clone(),
                    inst.step.clone(),
                )
            })
        })
        .filter(|(a, b)| a != b)
        .collect()
}

pub fn render(plan: &Plan, states: &[State]) -> Result<String> {
    let edges = step_edges(plan);
    // Depth = longest path from a step without inputs; `step_order` lists inputs first.
    let mut depth: BTreeMap<&str, i32> = BTreeMap::new();
    for step in &plan.step_order {
        let d = edges
            .iter()
            .filter(|(_, to)| to == step)
            .map(|(from, _)| depth.get(from.as_str()).copied().unwrap_or(0) + 1)
            .max()
            .unwrap_or(0);
        depth.insert(step, d);
    }
    // Edges that skip a column run along a lane above the boxes instead of through them.
    let long: Vec<&(String, String)> = edges
        .iter()
        .filter(|(from, to)| depth[to.as_str()] - depth[from.as_str()] > 1)
        .collect();
    let top = TOP + LANE * long.len() as i32;
    let mut column_y: BTreeMap<i32, i32> = BTreeMap::new();
    let mut boxes: Vec<StepBox> = Vec::new();
    for step in &plan.step_order {
        let members = plan.by_step.get(step).cloned().unwrap_or_default();
        let Some(&first) = members.first() else {
            continue;
        };
        let d = depth[step.as_str()];
        let rows = (members.len() as i32 + PER_ROW - 1) / PER_ROW;
        let h = HEADER + rows * CELL + 8;
        let y = column_y.entry(d).or_insert(top);
        boxes.push(StepBox {
            step: step.clone(),
            kind: plan.instances[first].kind.kind().to_string(),
            members,
            x: LEFT + d * (BOX_W + COL_GAP),
            y: *y,
            h,
        });
        *y += h + ROW_GAP;
    }
    let columns = depth.values().copied().max().unwrap_or(0) + 1;
    let width = (LEFT * 2 + columns * BOX_W + (columns - 1) * COL_GAP).max(640) as u32;
    let height = (column_y.values().copied().max().unwrap_or(top) + 4) as u32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        // State legend along the top.
        let mut x = LEFT;
        for s in State::ALL {
            let (r, g, b) = s.colour();
            let n = states.iter().filter(|&&t| t == s).count();
            if n == 0 && !matches!(s, State::Done | State::Failed) {
                continue;
            }
            root.draw(&Rectangle::new(
                [(x, 12), (x + CELL - 2, 12 + CELL - 2)],
                RGBColor(r, g, b).filled(),
            ))
            .map_err(draw_err)?;
            let label = format!("{} ({n})", s.label());
            root.draw(&Text::new(
                label.clone(),
                (x + CELL + 4, 17),
                (FONT, 14)
                    .into_font()
                    .color(&BLACK)
                    .pos(Pos::new(HPos::Left, VPos::Center)),
            ))
            .map_err(draw_err)?;
            x += CELL + 24 + label.chars().count() as i32 * 8;
        }
        let find = |step: &str| boxes.iter().find(|b| b.step == step);
        for (from, to) in &edges {
            if let (Some(a), Some(b)) = (find(from), find(to)) {
                let start = (a.x + BOX_W, a.y + a.h / 2);
                let end = (b.x, b.y + b.h / 2);
                let path = match long.iter().position(|e| e.0 == *from && e.1 == *to) {
                    Some(lane) => {
                        let (out, inn) = (start.0 + COL_GAP / 3, end.0 - COL_GAP / 3);
                        let y = TOP - 4 + LANE * lane as i32;
                        vec![start, (out, start.1), (out, y), (inn, y), (inn, end.1), end]
                    }
                    None => {
                        let mid = (start.0 + end.0) / 2;
                        vec![start, (mid, start.1), (mid, end.1), end]
                    }
                };
                root.draw(&PathElement::new(
                    path,
                    RGBColor(0x88, 0x88, 0x88).stroke_width(1),
                ))
                .map_err(draw_err)?;
                root.draw(&TriangleMarker::new(
                    (end.0 - 4, end.1),
                    4,
                    RGBColor(0x88, 0x88, 0x88).filled(),
                ))
                .map_err(draw_err)?;
            }
        }
        for b in &boxes {
            root.draw(&Rectangle::new(
                [(b.x, b.y), (b.x + BOX_W, b.y + b.h)],
                RGBColor(0xF7, 0xF7, 0xF7).filled(),
            ))
            .map_err(draw_err)?;
            root.draw(&Rectangle::new(
                [(b.x, b.y), (b.x + BOX_W, b.y + b.h)],
                RGBColor(0x55, 0x55, 0x55).stroke_width(1),
            ))
            .map_err(draw_err)?;
            let done = b
                .members
                .iter()
                .filter(|&&i| states[i] == State::Done)
                .count();
            root.draw(&Text::new(
                b.step.clone(),
                (b.x + 8, b.y + 6),
                (FONT, 15, FontStyle::Bold)
                    .into_font()
                    .color(&BLACK)
                    .pos(Pos::new(HPos::Left, VPos::Top)),
            ))
            .map_err(draw_err)?;
            root.draw(&Text::new(
                format!("{} · {done}/{} done", b.kind, b.members.len()),
                (b.x + 8, b.y + 23),
                (FONT, 13)
                    .into_font()
                    .color(&RGBColor(0x44, 0x44, 0x44))
                    .pos(Pos::new(HPos::Left, VPos::Top)),
            ))
            .map_err(draw_err)?;
            for (n, &i) in b.members.iter().enumerate() {
                let (col, row) = (n as i32 % PER_ROW, n as i32 / PER_ROW);
                let (cx, cy) = (b.x + 8 + col * CELL, b.y + HEADER + row * CELL);
                let (r, g, bl) = states[i].colour();
                root.draw(&Rectangle::new(
                    [(cx, cy), (cx + CELL - 2, cy + CELL - 2)],
                    RGBColor(r, g, bl).filled(),
                ))
                .map_err(draw_err)?;
            }
        }
        root.present().map_err(draw_err)?;
    }
    Ok(svg)
}
