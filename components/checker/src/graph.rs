//! Cycle search in a dependency graph whose edges carry a mask of kinds (ww, wr, rw).
//!
//! Flow: Tarjan's SCCs of the whole graph; each non-trivial SCC is copied into a small local
//! graph, then searched once per anomaly class with that class's edge constraint. G0 and G1c
//! take one BFS per SCC of the ww (resp. ww+wr) subgraph. G-single needs an rw edge `u -> v`
//! with `v` reaching `u` over ww+wr edges: that is answered for every rw edge at once by
//! reachability bitsets over the condensation of the ww+wr subgraph, and BFS only builds the
//! cycle. Nothing here is quadratic in the number of transactions except those bitsets, which
//! are computed in bounded batches.

use std::collections::VecDeque;

use crate::anomaly::{AnomalyKind, EdgeKind};

/// Edge-kind bits in a mask.
pub(crate) const WW: u8 = 1;
/// Write-read bit.
pub(crate) const WR: u8 = 2;
/// Read-write bit.
pub(crate) const RW: u8 = 4;
const ALL: u8 = WW | WR | RW;
const NONE: u32 = u32::MAX;
/// Candidate edges tried per SCC when looking for the shortest G-single or G2-item cycle.
const CYCLE_CANDIDATES_MAX: usize = 4;
/// Target components per reachability batch, in 64-bit words.
const REACH_BATCH_WORDS_MAX: usize = 64;

/// Adjacency lists: `adj[node]` holds `(target, kind mask)`, one entry per distinct target.
pub(crate) type Adj = Vec<Vec<(u32, u8)>>;

/// A cycle found: its class and its edges as `(from, to, kind)` over the graph's node indices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FoundCycle {
    pub(crate) kind: AnomalyKind,
    pub(crate) steps: Vec<(u32, u32, EdgeKind)>,
}

/// Finds, in each SCC, one G0 cycle per ww-SCC, one G1c cycle per ww+wr-SCC holding a wr edge,
/// and one G-single cycle, or failing that one G2-item cycle.
pub(crate) fn find_cycles(adj: &Adj) -> Vec<FoundCycle> {
    let (_, comps) = tarjan(adj, ALL);
    let mut slot = vec![NONE; adj.len()];
    let mut out = Vec::new();
    for comp in comps.iter().filter(|c| c.len() > 1) {
        let local = localize(adj, comp, &mut slot);
        for mut cycle in search_component(&local) {
            for step in &mut cycle.steps {
                step.0 = comp[step.0 as usize];
                step.1 = comp[step.1 as usize];
            }
            out.push(cycle);
        }
    }
    out
}

/// The subgraph induced by `members`, renumbered `0..members.len()`.
fn localize(adj: &Adj, members: &[u32], slot: &mut [u32]) -> Adj {
    for (i, &g) in members.iter().enumerate() {
        slot[g as usize] = i as u32;
    }
    let local = members
        .iter()
        .map(|&g| {
            adj[g as usize]
                .iter()
                .filter(|(w, _)| slot[*w as usize] != NONE)
                .map(|&(w, m)| (slot[w as usize], m))
                .collect()
        })
        .collect();
    for &g in members {
        slot[g as usize] = NONE;
    }
    local
}

fn search_component(adj: &Adj) -> Vec<FoundCycle> {
    let mut out = Vec::new();
    let (ww_of, ww_comps) = tarjan(adj, WW);
    for (c, comp) in ww_comps.iter().enumerate().filter(|(_, c)| c.len() > 1) {
        let s = comp[0];
        if let Some(path) = bfs(adj, WW, s, s, Some((&ww_of, c as u32))) {
            out.push(cycle_from(adj, AnomalyKind::G0, None, &path, WW));
        }
    }
    let (wwr_of, wwr_comps) = tarjan(adj, WW | WR);
    for (c, comp) in wwr_comps.iter().enumerate().filter(|(_, c)| c.len() > 1) {
        let c = c as u32;
        let wr_edge = comp.iter().find_map(|&u| {
            adj[u as usize]
                .iter()
                .find(|(w, m)| m & WR != 0 && wwr_of[*w as usize] == c)
                .map(|&(w, _)| (u, w))
        });
        if let Some((u, v)) = wr_edge {
            if let Some(path) = bfs(adj, WW | WR, v, u, Some((&wwr_of, c))) {
                let first = (u, v, EdgeKind::Wr);
                out.push(cycle_from(
                    adj,
                    AnomalyKind::G1c,
                    Some(first),
                    &path,
                    WW | WR,
                ));
            }
        }
    }
    let singles = rw_edges_closing_ww_wr_cycles(adj, &wwr_of, &wwr_comps, CYCLE_CANDIDATES_MAX);
    let (kind, candidates, allowed) = if singles.is_empty() {
        let rw: Vec<(u32, u32)> = rw_edges(adj).take(CYCLE_CANDIDATES_MAX).collect();
        (AnomalyKind::G2Item, rw, ALL)
    } else {
        (AnomalyKind::GSingle, singles, WW | WR)
    };
    let shortest = candidates
        .iter()
        .filter_map(|&(u, v)| {
            let path = bfs(adj, allowed, v, u, None)?;
            Some(cycle_from(
                adj,
                kind,
                Some((u, v, EdgeKind::Rw)),
                &path,
                allowed,
            ))
        })
        .min_by_key(|c| c.steps.len());
    out.extend(shortest);
    out
}

fn rw_edges(adj: &Adj) -> impl Iterator<Item = (u32, u32)> + '_ {
    adj.iter().enumerate().flat_map(|(u, es)| {
        es.iter()
            .filter(|(_, m)| m & RW != 0)
            .map(move |&(v, _)| (u as u32, v))
    })
}

/// Up to `limit` rw edges `u -> v` such that `v` reaches `u` over ww+wr edges, given the SCCs
/// of the ww+wr subgraph in Tarjan's emission order (every component's successors come first).
fn rw_edges_closing_ww_wr_cycles(
    adj: &Adj,
    comp_of: &[u32],
    comps: &[Vec<u32>],
    limit: usize,
) -> Vec<(u32, u32)> {
    let (same, cross): (Vec<_>, Vec<_>) =
        rw_edges(adj).partition(|&(u, v)| comp_of[u as usize] == comp_of[v as usize]);
    let mut out: Vec<(u32, u32)> = same.into_iter().take(limit).collect();
    if out.len() >= limit || cross.is_empty() {
        return out;
    }
    let nc = comps.len();
    let mut succ: Vec<Vec<u32>> = vec![Vec::new(); nc];
    for (u, es) in adj.iter().enumerate() {
        let cu = comp_of[u];
        for &(w, m) in es {
            let cw = comp_of[w as usize];
            if m & (WW | WR) != 0 && cu != cw {
                succ[cu as usize].push(cw);
            }
        }
    }
    for s in &mut succ {
        s.sort_unstable();
        s.dedup();
    }
    let words = nc.div_ceil(64).min(REACH_BATCH_WORDS_MAX);
    let batch = words * 64;
    let mut reach = vec![0u64; nc * words];
    for b0 in (0..nc).step_by(batch) {
        reach.iter_mut().for_each(|w| *w = 0);
        for c in 0..nc {
            let (done, rest) = reach.split_at_mut(c * words);
            let mine = &mut rest[..words];
            if (b0..b0 + batch).contains(&c) {
                mine[(c - b0) / 64] |= 1 << ((c - b0) % 64);
            }
            for &s in &succ[c] {
                debug_assert!((s as usize) < c, "Tarjan emits successors first");
                let theirs = &done[s as usize * words..(s as usize + 1) * words];
                mine.iter_mut().zip(theirs).for_each(|(a, b)| *a |= b);
            }
        }
        for &(u, v) in &cross {
            let cu = comp_of[u as usize] as usize;
            if !(b0..b0 + batch).contains(&cu) {
                continue;
            }
            let row = comp_of[v as usize] as usize * words;
            if reach[row + (cu - b0) / 64] & (1 << ((cu - b0) % 64)) != 0 {
                out.push((u, v));
                if out.len() >= limit {
                    return out;
                }
            }
        }
    }
    out
}

/// Builds a cycle: the optional forced first edge, then `path`'s edges (kinds chosen from
/// `allowed`, preferring ww, then wr, then rw).
fn cycle_from(
    adj: &Adj,
    kind: AnomalyKind,
    first: Option<(u32, u32, EdgeKind)>,
    path: &[u32],
    allowed: u8,
) -> FoundCycle {
    let mut steps: Vec<(u32, u32, EdgeKind)> = first.into_iter().collect();
    for pair in path.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        let mask = adj[a as usize]
            .iter()
            .find(|(w, _)| *w == b)
            .map(|&(_, m)| m & allowed)
            .expect("BFS only walks existing edges");
        let k = [EdgeKind::Ww, EdgeKind::Wr, EdgeKind::Rw]
            .into_iter()
            .find(|k| mask & k.bit() != 0)
            .expect("BFS only walks allowed edges");
        steps.push((a, b, k));
    }
    FoundCycle { kind, steps }
}

/// Shortest path `src -> .. -> dst` over edges whose mask meets `allowed` (at least one edge,
/// so `src == dst` finds a shortest cycle through `src`), optionally staying inside component
/// `c` of `comp_of`.
fn bfs(
    adj: &Adj,
    allowed: u8,
    src: u32,
    dst: u32,
    within: Option<(&[u32], u32)>,
) -> Option<Vec<u32>> {
    let mut parent = vec![NONE; adj.len()];
    parent[src as usize] = src;
    let mut queue = VecDeque::from([src]);
    while let Some(v) = queue.pop_front() {
        for &(w, m) in &adj[v as usize] {
            if m & allowed == 0 || within.is_some_and(|(of, c)| of[w as usize] != c) {
                continue;
            }
            if w == dst {
                let mut path = vec![dst, v];
                let mut x = v;
                while x != src {
                    x = parent[x as usize];
                    path.push(x);
                }
                path.reverse();
                return Some(path);
            }
            if parent[w as usize] == NONE {
                parent[w as usize] = v;
                queue.push_back(w);
            }
        }
    }
    None
}

/// Tarjan's strongly connected components over edges whose mask meets `allowed`, iteratively.
/// Returns each node's component and the components in emission order (sinks first).
pub(crate) fn tarjan(adj: &Adj, allowed: u8) -> (Vec<u32>, Vec<Vec<u32>>) {
    let n = adj.len();
    let mut t = Tarjan {
        index: vec![NONE; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        calls: Vec::new(),
        next: 0,
    };
    let mut comp_of = vec![NONE; n];
    let mut comps: Vec<Vec<u32>> = Vec::new();
    for root in 0..n as u32 {
        if t.index[root as usize] != NONE {
            continue;
        }
        t.visit(root);
        while let Some(&(v, pos)) = t.calls.last() {
            let vi = v as usize;
            if let Some(&(w, m)) = adj[vi].get(pos) {
                t.calls.last_mut().expect("non-empty").1 += 1;
                if m & allowed == 0 {
                    continue;
                }
                if t.index[w as usize] == NONE {
                    t.visit(w);
                } else if t.on_stack[w as usize] {
                    t.low[vi] = t.low[vi].min(t.index[w as usize]);
                }
                continue;
            }
            t.calls.pop();
            if let Some(&(u, _)) = t.calls.last() {
                t.low[u as usize] = t.low[u as usize].min(t.low[vi]);
            }
            if t.low[vi] == t.index[vi] {
                let id = comps.len() as u32;
                let mut comp = Vec::new();
                loop {
                    let x = t.stack.pop().expect("v is on the stack");
                    t.on_stack[x as usize] = false;
                    comp_of[x as usize] = id;
                    comp.push(x);
                    if x == v {
                        break;
                    }
                }
                comps.push(comp);
            }
        }
    }
    (comp_of, comps)
}

/// Tarjan's working state; `calls` is the explicit DFS stack of `(node, next edge)`.
struct Tarjan {
    index: Vec<u32>,
    low: Vec<u32>,
    on_stack: Vec<bool>,
    stack: Vec<u32>,
    calls: Vec<(u32, usize)>,
    next: u32,
}

impl Tarjan {
    fn visit(&mut self, v: u32) {
        self.index[v as usize] = self.next;
        self.low[v as usize] = self.next;
        self.next += 1;
        self.stack.push(v);
        self.on_stack[v as usize] = true;
        self.calls.push((v, 0));
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn graph(n: usize, edges: &[(u32, u32, u8)]) -> Adj {
        let mut adj: Adj = vec![Vec::new(); n];
        for &(a, b, m) in edges {
            adj[a as usize].push((b, m));
        }
        adj
    }

    fn kinds(found: &[FoundCycle]) -> Vec<AnomalyKind> {
        let mut k: Vec<_> = found.iter().map(|c| c.kind).collect();
        k.sort();
        k
    }

    #[test]
    fn tarjan_emits_sinks_first() {
        let adj = graph(4, &[(0, 1, WW), (1, 0, WW), (1, 2, WW), (2, 3, RW)]);
        let (of, comps) = tarjan(&adj, ALL);
        assert_eq!(comps.len(), 3);
        assert_eq!(of[0], of[1]);
        assert!(of[3] < of[2] && of[2] < of[0]);
        let (_, ww_only) = tarjan(&adj, WW);
        assert_eq!(ww_only.len(), 3);
    }

    #[test]
    fn classifies_cycles_by_edge_kinds() {
        assert_eq!(
            kinds(&find_cycles(&graph(2, &[(0, 1, WW), (1, 0, WW)]))),
            [AnomalyKind::G0]
        );
        assert_eq!(
            kinds(&find_cycles(&graph(2, &[(0, 1, WW), (1, 0, WR)]))),
            [AnomalyKind::G1c]
        );
        assert_eq!(
            kinds(&find_cycles(&graph(
                3,
                &[(0, 1, WR), (1, 2, WW), (2, 0, RW)]
            ))),
            [AnomalyKind::GSingle]
        );
        assert_eq!(
            kinds(&find_cycles(&graph(2, &[(0, 1, RW), (1, 0, RW)]))),
            [AnomalyKind::G2Item]
        );
        assert!(find_cycles(&graph(3, &[(0, 1, RW), (1, 2, WW), (0, 2, WR)])).is_empty());
    }

    #[test]
    fn g_single_found_across_ww_wr_components() {
        // 0 -rw-> 1, and 1 reaches 0 only through a chain of distinct ww+wr components, while
        // an rw-rw write-skew cycle (3, 4) sits in the same SCC.
        let edges = [
            (0, 1, RW),
            (1, 2, WR),
            (2, 5, WW),
            (5, 0, WR),
            (0, 3, RW),
            (3, 4, RW),
            (4, 3, RW),
            (3, 0, RW),
        ];
        let found = find_cycles(&graph(6, &edges));
        assert_eq!(kinds(&found), [AnomalyKind::GSingle]);
        let steps = &found[0].steps;
        assert_eq!(steps.len(), 4);
        assert_eq!(steps[0], (0, 1, EdgeKind::Rw));
        assert_eq!(steps.last().unwrap().1, 0);
    }

    /// `r[a][b]`: a path of one or more edges meeting `allowed` leads from a to b.
    fn closure(adj: &Adj, allowed: u8) -> Vec<Vec<bool>> {
        let n = adj.len();
        let mut r = vec![vec![false; n]; n];
        for (a, es) in adj.iter().enumerate() {
            for &(b, m) in es {
                r[a][b as usize] |= m & allowed != 0;
            }
        }
        for k in 0..n {
            for a in 0..n {
                for b in 0..n {
                    r[a][b] |= r[a][k] && r[k][b];
                }
            }
        }
        r
    }

    /// The classes `find_cycles` should report, from transitive closures instead of SCCs.
    fn expected_kinds(adj: &Adj) -> Vec<AnomalyKind> {
        let n = adj.len();
        let (ww, wwr, all) = (closure(adj, WW), closure(adj, WW | WR), closure(adj, ALL));
        let edges = |bit: u8| {
            adj.iter().enumerate().flat_map(move |(a, es)| {
                es.iter()
                    .filter(move |(_, m)| m & bit != 0)
                    .map(move |&(b, _)| (a, b as usize))
            })
        };
        let back = |v: usize, u: usize| v == u || wwr[v][u];
        let mut kinds = Vec::new();
        if (0..n).any(|a| ww[a][a]) {
            kinds.push(AnomalyKind::G0);
        }
        if edges(WR).any(|(u, v)| back(v, u)) {
            kinds.push(AnomalyKind::G1c);
        }
        let singles: Vec<(usize, usize)> = edges(RW).filter(|&(u, v)| back(v, u)).collect();
        if !singles.is_empty() {
            kinds.push(AnomalyKind::GSingle);
        }
        // G2-item: an SCC with an rw edge inside and no G-single there.
        let same_scc = |a: usize, b: usize| a == b || (all[a][b] && all[b][a]);
        if edges(RW).any(|(u, v)| all[v][u] && !singles.iter().any(|&(x, _)| same_scc(x, u))) {
            kinds.push(AnomalyKind::G2Item);
        }
        kinds
    }

    fn random_graph() -> impl Strategy<Value = Adj> {
        (2usize..8).prop_flat_map(|n| {
            proptest::collection::vec((0..n as u32, 0..n as u32, 1u8..8), 0..3 * n).prop_map(
                move |edges| {
                    let mut adj: Adj = vec![Vec::new(); n];
                    for (a, b, m) in edges {
                        if a == b {
                            continue;
                        }
                        match adj[a as usize].iter_mut().find(|(w, _)| *w == b) {
                            Some(e) => e.1 |= m,
                            None => adj[a as usize].push((b, m)),
                        }
                    }
                    adj
                },
            )
        })
    }

    proptest! {
        #[test]
        fn cycles_match_closures_and_are_well_formed(adj in random_graph()) {
            let found = find_cycles(&adj);
            let mut got = kinds(&found);
            got.dedup();
            prop_assert_eq!(got, expected_kinds(&adj));
            for c in &found {
                let first = c.steps[0].0;
                prop_assert_eq!(c.steps.last().unwrap().1, first);
                for (i, &(a, b, k)) in c.steps.iter().enumerate() {
                    let mask = adj[a as usize].iter().find(|(w, _)| *w == b).map(|e| e.1);
                    prop_assert!(mask.is_some_and(|m| m & k.bit() != 0));
                    if i > 0 {
                        prop_assert_eq!(c.steps[i - 1].1, a);
                    }
                }
                let count = |k: EdgeKind| c.steps.iter().filter(|s| s.2 == k).count();
                let (wr, rw) = (count(EdgeKind::Wr), count(EdgeKind::Rw));
                match c.kind {
                    AnomalyKind::G0 => prop_assert_eq!((wr, rw), (0, 0)),
                    AnomalyKind::G1c => prop_assert!(wr > 0 && rw == 0),
                    AnomalyKind::GSingle => prop_assert_eq!(rw, 1),
                    AnomalyKind::G2Item => prop_assert!(rw >= 2),
                    k => prop_assert!(false, "unexpected {:?}", k),
                }
            }
        }
    }
}
