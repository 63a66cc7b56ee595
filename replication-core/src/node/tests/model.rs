//! Random operation sequences against a model of each session's expected state, on a
//! three-node peer-to-peer domain with reliable delivery and two backups per session.

use crate::api::{Ack, Command, Outcome, Role};
use crate::config::NodeId;
use crate::harness::*;
use crate::message::{Attributes, Change, Version};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Clone, Debug)]
enum Op {
    Create { s: u8, n: u8 },
    Update { s: u8, n: u8, key: u8, val: u8, sync: bool, expect: Option<bool> },
    Remove { s: u8, n: u8, key: u8 },
    Get { s: u8, n: u8 },
    Invalidate { s: u8, n: u8 },
    Touch { s: u8, n: u8 },
    Advance { ms: u16 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..4u8, 0..3u8).prop_map(|(s, n)| Op::Create { s, n }),
        (0..4u8, 0..3u8, 0..3u8, any::<u8>(), any::<bool>(), proptest::option::of(any::<bool>()))
            .prop_map(|(s, n, key, val, sync, expect)| Op::Update { s, n, key, val, sync, expect }),
        (0..4u8, 0..3u8, 0..3u8).prop_map(|(s, n, key)| Op::Remove { s, n, key }),
        (0..4u8, 0..3u8).prop_map(|(s, n)| Op::Get { s, n }),
        (0..4u8, 0..3u8).prop_map(|(s, n)| Op::Invalidate { s, n }),
        (0..4u8, 0..3u8).prop_map(|(s, n)| Op::Touch { s, n }),
        (0..700u16).prop_map(|ms| Op::Advance { ms }),
    ]
}

#[derive(Clone, Debug)]
struct Model {
    owner: NodeId,
    version: Version,
    attrs: Attributes,
    invalidated: bool,
}

const NAMES: [&str; 3] = ["a", "b", "c"];

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
    #[test]
    fn operations_match_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        let mut cl = Cluster::new(&NAMES, 2);
        let mut model: BTreeMap<String, Model> = BTreeMap::new();
        let mut rid = 100;
        for op in ops {
            rid += 1;
            match op {
                Op::Create { s, n } => {
                    let (s, n) = (format!("s{s}"), NAMES[n as usize]);
                    cl.cmd(n, rid, Command::Create { session: s.clone(), attrs: Attributes::new(), max_inactive: Duration::from_secs(3600), ack: Ack::Sync { backups: 2 } });
                    cl.pump();
                    let got = cl.outcome(rid).cloned();
                    let fresh = Model { owner: id(n), version: 1, attrs: Attributes::new(), invalidated: false };
                    match model.entry(s) {
                        std::collections::btree_map::Entry::Occupied(_) => {
                            prop_assert_eq!(got, Some(Outcome::AlreadyExists));
                        }
                        std::collections::btree_map::Entry::Vacant(v) => {
                            prop_assert!(matches!(got, Some(Outcome::Replicated { version: 1, acks: 2, .. })), "{:?}", got);
                            v.insert(fresh);
                        }
                    }
                }
                Op::Update { s, n, key, val, sync, expect } => {
                    let (s, n) = (format!("s{s}"), NAMES[n as usize]);
                    let m = model.get(&s).cloned();
                    let expected_version = expect.map(|right| m.as_ref().map_or(1, |m| m.version) + u64::from(!right));
                    let ack = if sync { Ack::Sync { backups: 1 } } else { Ack::Async };
                    let change = Change::Set(format!("k{key}"), vec![val].into());
                    cl.cmd(n, rid, Command::Update { session: s.clone(), expected_version, changes: vec![change.clone()], ack });
                    cl.pump();
                    let got = cl.outcome(rid).cloned().unwrap();
                    match m {
                        Some(m) if m.owner == id(n) && m.invalidated => prop_assert_eq!(got, Outcome::NotFound),
                        Some(m) if m.owner == id(n) => {
                            if expected_version.is_some_and(|v| v != m.version) {
                                prop_assert_eq!(got, Outcome::Conflict { current_version: m.version });
                            } else {
                                let mm = model.get_mut(&s).unwrap();
                                mm.version += 1;
                                change.apply(&mut mm.attrs);
                                if sync {
                                    prop_assert!(matches!(got, Outcome::Replicated { acks: 1, version, .. } if version == mm.version), "{:?}", got);
                                } else {
                                    prop_assert!(matches!(got, Outcome::Applied { version, .. } if version == mm.version), "{:?}", got);
                                }
                            }
                        }
                        _ => prop_assert!(matches!(got, Outcome::NotOwner { .. }), "{:?}", got),
                    }
                }
                Op::Remove { s, n, key } => {
                    let (s, n) = (format!("s{s}"), NAMES[n as usize]);
                    let change = Change::Remove(format!("k{key}"));
                    cl.cmd(n, rid, Command::Update { session: s.clone(), expected_version: None, changes: vec![change.clone()], ack: Ack::Async });
                    cl.pump();
                    if let Some(mm) = model.get_mut(&s) {
                        if mm.owner == id(n) && !mm.invalidated {
                            mm.version += 1;
                            change.apply(&mut mm.attrs);
                        }
                    }
                }
                Op::Get { s, n } => {
                    let (s, n) = (format!("s{s}"), NAMES[n as usize]);
                    cl.cmd(n, rid, Command::Get { session: s.clone() });
                    cl.pump();
                    let got = cl.outcome(rid).cloned().unwrap();
                    match model.get_mut(&s) {
                        Some(m) if !m.invalidated => {
                            match got {
                                Outcome::Found { version, attrs, epoch } => {
                                    prop_assert_eq!(version, m.version);
                                    prop_assert_eq!(&attrs, &m.attrs);
                                    prop_assert_eq!(&epoch.node, &id(n));
                                }
                                other => prop_assert!(false, "get gave {:?}", other),
                            }
                            m.owner = id(n);
                        }
                        _ => prop_assert_eq!(got, Outcome::NotFound),
                    }
                }
                Op::Invalidate { s, n } => {
                    let (s, n) = (format!("s{s}"), NAMES[n as usize]);
                    cl.cmd(n, rid, Command::Invalidate { session: s.clone(), ack: Ack::Sync { backups: 2 } });
                    cl.pump();
                    let got = cl.outcome(rid).cloned().unwrap();
                    match model.get_mut(&s) {
                        Some(m) if m.owner == id(n) && !m.invalidated => {
                            m.version += 1;
                            m.invalidated = true;
                            m.attrs.clear();
                            prop_assert!(matches!(got, Outcome::Replicated { acks: 2, .. }), "{:?}", got);
                        }
                        Some(m) if m.owner == id(n) => prop_assert_eq!(got, Outcome::NotFound),
                        _ => prop_assert!(matches!(got, Outcome::NotOwner { .. }), "{:?}", got),
                    }
                }
                Op::Touch { s, n } => {
                    let (s, n) = (format!("s{s}"), NAMES[n as usize]);
                    cl.cmd(n, rid, Command::Touch { session: s.clone() });
                    let got = cl.outcome(rid).cloned().unwrap();
                    match model.get(&s) {
                        Some(m) if m.owner == id(n) && !m.invalidated => prop_assert_eq!(got, Outcome::Touched),
                        Some(m) if m.owner == id(n) => prop_assert_eq!(got, Outcome::NotFound),
                        _ => prop_assert!(matches!(got, Outcome::NotOwner { .. }), "{:?}", got),
                    }
                    cl.pump();
                }
                Op::Advance { ms } => cl.advance(Duration::from_millis(u64::from(ms))),
            }
            // Every node agrees with the model: the owner serves it, both others back it up.
            for (s, m) in &model {
                for n in NAMES {
                    let v = cl.session(n, s).unwrap();
                    prop_assert_eq!(v.version, m.version, "{} on {}", s, n);
                    prop_assert_eq!(v.invalidated, m.invalidated);
                    prop_assert_eq!(&v.attrs, &m.attrs);
                    let role = if id(n) == m.owner { Role::Owner } else if m.invalidated { Role::None } else { Role::Backup };
                    prop_assert_eq!(v.role, role, "{} on {}", s, n);
                }
            }
        }
    }
}
