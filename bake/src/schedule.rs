//! Running targets at once, each as soon as the targets it needs (its `target:` contexts) are built.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex};

/// What became of one target.
#[derive(Debug)]
pub enum Outcome<T, E> {
    /// Built; the value is what the targets that need it receive.
    Built(T),
    /// Its build failed.
    Failed(E),
    /// Not started: a target it needs failed or was skipped, or `stop` said so.
    Skipped,
}

/// Runs `build` for every name of `order` (each after those it `needs`; `order` lists needs first), each
/// on its own thread as soon as its needs are built, with their values. A target is skipped when one of
/// its needs did not build, or when `stop()` is true as it would start (the first failure stops the rest
/// unless the caller's `stop` says otherwise). Returns the outcomes in `order`.
pub fn run<T, E, N, S, B>(
    order: &[String],
    needs: N,
    stop: S,
    build: B,
) -> Vec<(String, Outcome<T, E>)>
where
    T: Clone + Send,
    E: Send,
    N: Fn(&str) -> Vec<String> + Sync,
    S: Fn() -> bool + Sync,
    B: Fn(&str, HashMap<String, T>) -> Result<T, E> + Sync,
{
    let outcomes: Mutex<HashMap<String, Outcome<T, E>>> = Mutex::new(HashMap::new());
    let changed = Condvar::new();
    std::thread::scope(|s| {
        for name in order {
            let (outcomes, changed, needs, stop, build) =
                (&outcomes, &changed, &needs, &stop, &build);
            s.spawn(move || {
                let wanted = needs(name);
                let inputs = {
                    let mut done = outcomes.lock().expect("schedule lock");
                    loop {
                        let mut ready = HashMap::new();
                        let mut broken = false;
                        for w in &wanted {
                            match done.get(w) {
                                Some(Outcome::Built(v)) => {
                                    ready.insert(w.clone(), v.clone());
                                }
                                Some(_) => broken = true,
                                None => {}
                            }
                        }
                        if broken || stop() {
                            done.insert(name.clone(), Outcome::Skipped);
                            changed.notify_all();
                            return;
                        }
                        if ready.len() == wanted.len() {
                            break ready;
                        }
                        done = changed.wait(done).expect("schedule lock");
                    }
                };
                let outcome = match build(name, inputs) {
                    Ok(v) => Outcome::Built(v),
                    Err(e) => Outcome::Failed(e),
                };
                outcomes
                    .lock()
                    .expect("schedule lock")
                    .insert(name.clone(), outcome);
                changed.notify_all();
            });
        }
    });
    let mut outcomes = outcomes.into_inner().expect("schedule lock");
    order
        .iter()
        .map(|n| (n.clone(), outcomes.remove(n).unwrap_or(Outcome::Skipped)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::Duration;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn needs_come_first_and_independent_targets_overlap() {
        let running = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        let out = run(
            &names(&["base", "a", "b", "c"]),
            |n| {
                if n == "base" {
                    vec![]
                } else {
                    names(&["base"])
                }
            },
            || false,
            |n, inputs: HashMap<String, String>| -> Result<String, ()> {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(100));
                running.fetch_sub(1, Ordering::SeqCst);
                Ok(match inputs.get("base") {
                    Some(b) => format!("{n} on {b}"),
                    None => n.to_owned(),
                })
            },
        );
        let got: Vec<String> = out
            .into_iter()
            .map(|(_, o)| match o {
                Outcome::Built(v) => v,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(got, ["base", "a on base", "b on base", "c on base"]);
        assert_eq!(most.load(Ordering::SeqCst), 3, "a, b and c ran at once");
    }

    #[test]
    fn a_failure_skips_what_needs_it_and_stop_skips_the_rest() {
        let stopped = AtomicBool::new(false);
        let out = run(
            &names(&["base", "a", "solo"]),
            |n| if n == "a" { names(&["base"]) } else { vec![] },
            || false,
            |n, _| if n == "base" { Err("boom") } else { Ok(()) },
        );
        assert!(matches!(out[0].1, Outcome::Failed("boom")));
        assert!(matches!(out[1].1, Outcome::Skipped));
        assert!(matches!(out[2].1, Outcome::Built(())));
        let out = run(
            &names(&["x", "y"]),
            |n| if n == "y" { names(&["x"]) } else { vec![] },
            || stopped.load(Ordering::SeqCst),
            |_, _| -> Result<(), ()> {
                stopped.store(true, Ordering::SeqCst);
                Ok(())
            },
        );
        assert!(matches!(out[0].1, Outcome::Built(())));
        assert!(matches!(out[1].1, Outcome::Skipped));
    }
}
