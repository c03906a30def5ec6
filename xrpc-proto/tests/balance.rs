//! The load-balancing policy, driven by hand: a fake clock, a seeded RNG, outcomes reported as
//! an adapter would. Every strategy's spread, health (ejection, probe, re-admission), the
//! retry budget and failover rules, stream affinity, discovery updates and the pool's rules.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use xrpc_proto::balance::{
    Balancer, BudgetConfig, Checkout, Delivery, Endpoint, Failover, HealthState, LeastConnections,
    LoadBalancerConfig, Outcome, P2c, Pick, PickError, PoolConfig, Random, RetryBudget, Rng,
    RoundRobin, ScoreBased, Slot, Strategy, WeightedRoundRobin,
};
use xrpc_proto::{CallError, ErrorCode, RemoteError};

fn ep(i: u16) -> Endpoint {
    Endpoint::tcp_from_str(&format!("127.0.0.1:{}", 9000 + i)).unwrap()
}

fn eps(n: u16) -> Vec<Endpoint> {
    (0..n).map(ep).collect()
}

fn balancer<S: Strategy>(strategy: S, n: u16) -> Balancer<S> {
    let mut b = Balancer::new(strategy, LoadBalancerConfig::default(), Rng::new(7));
    b.update(eps(n));
    b
}

/// `n` picks, each finished at once with success; how many each endpoint got.
fn spread<S: Strategy>(b: &mut Balancer<S>, now: Instant, n: usize) -> HashMap<Endpoint, usize> {
    let mut counts = HashMap::new();
    for _ in 0..n {
        let p = b.pick(now).unwrap();
        b.finish(&p, now, Outcome::Success);
        *counts.entry(p.endpoint).or_insert(0) += 1;
    }
    counts
}

fn assert_within(counts: &HashMap<Endpoint, usize>, expected: &[(Endpoint, f64)], tol: f64) {
    let total: usize = counts.values().sum();
    for (e, share) in expected {
        let got = *counts.get(e).unwrap_or(&0) as f64 / total as f64;
        assert!(
            (got - share).abs() <= tol,
            "{e}: share {got:.3}, expected {share:.3} ± {tol} ({counts:?})"
        );
    }
}

/// Picks (finishing every other pick with a success answered in `rtt`) until `target` is
/// picked; returns that pick, in flight.
fn pick_until<S: Strategy>(
    b: &mut Balancer<S>,
    now: Instant,
    target: &Endpoint,
    rtt: Duration,
) -> Pick {
    loop {
        let p = b.pick(now).unwrap();
        if p.endpoint == *target {
            return p;
        }
        b.finish(&p, now + rtt, Outcome::Success);
    }
}

#[test]
fn round_robin_takes_each_in_turn() {
    let now = Instant::now();
    let mut b = balancer(RoundRobin::new(), 3);
    let order: Vec<_> = (0..6)
        .map(|_| {
            let p = b.pick(now).unwrap();
            b.finish(&p, now, Outcome::Success);
            p.endpoint
        })
        .collect();
    assert_eq!(order[..3], order[3..]);
    let mut first = order[..3].to_vec();
    first.sort();
    assert_eq!(first, eps(3));
    let counts = spread(&mut b, now, 300);
    assert!(counts.values().all(|&c| c == 100), "{counts:?}");
}

#[test]
fn random_spreads_evenly_within_tolerance() {
    let now = Instant::now();
    let mut b = balancer(Random::new(), 3);
    let counts = spread(&mut b, now, 6000);
    let third = 1.0 / 3.0;
    assert_within(
        &counts,
        &[(ep(0), third), (ep(1), third), (ep(2), third)],
        0.03,
    );
}

#[test]
fn random_choices_follow_the_seed() {
    let now = Instant::now();
    let picks = |seed| {
        let mut b = Balancer::new(Random, LoadBalancerConfig::default(), Rng::new(seed));
        b.update(eps(5));
        (0..20)
            .map(|_| b.pick(now).unwrap().endpoint)
            .collect::<Vec<_>>()
    };
    assert_eq!(picks(1), picks(1));
    assert_ne!(picks(1), picks(2));
}

#[test]
fn least_connections_prefers_the_idle_endpoint() {
    let now = Instant::now();
    let mut b = balancer(LeastConnections::new(), 3);
    // Two calls held on each of two endpoints: every new call goes to the third until it is
    // as busy.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(b.pick(now).unwrap());
    }
    let mut by: HashMap<Endpoint, usize> = HashMap::new();
    for p in &held {
        *by.entry(p.endpoint.clone()).or_default() += 1;
    }
    // Ties are broken at random, but never toward a busier endpoint: 4 calls on 3 endpoints
    // are 2-1-1.
    let mut loads: Vec<usize> = eps(3).iter().map(|e| *by.get(e).unwrap_or(&0)).collect();
    loads.sort();
    assert_eq!(loads, [1, 1, 2]);
    let busiest = by.iter().find(|(_, n)| **n == 2).unwrap().0.clone();
    for _ in 0..2 {
        let p = b.pick(now).unwrap();
        assert_ne!(p.endpoint, busiest, "a call went to the busiest endpoint");
        held.push(p);
    }
    // All hold two now; finishing one makes its endpoint the only idle one.
    let freed = held.remove(0);
    b.finish(&freed, now, Outcome::Success);
    let p = b.pick(now).unwrap();
    assert_eq!(p.endpoint, freed.endpoint);
}

#[test]
fn weighted_round_robin_gives_weighted_shares_smoothly() {
    let now = Instant::now();
    let w = WeightedRoundRobin::with_weights([(ep(0), 5), (ep(1), 3), (ep(2), 1)]);
    let mut b = balancer(w, 3);
    // One cycle is 9 picks: exactly 5, 3 and 1, and the heaviest never three times in a row.
    let cycle: Vec<_> = (0..9)
        .map(|_| {
            let p = b.pick(now).unwrap();
            b.finish(&p, now, Outcome::Success);
            p.endpoint
        })
        .collect();
    assert!(
        !cycle.windows(3).any(|w| w.iter().all(|e| *e == ep(0))),
        "not smooth: {cycle:?}"
    );
    let counts = spread(&mut b, now, 900);
    assert_eq!(counts[&ep(0)], 500);
    assert_eq!(counts[&ep(1)], 300);
    assert_eq!(counts[&ep(2)], 100);
}

/// Calls with `concurrency` in flight for `calls` calls, each endpoint answering after its
/// latency in `latency`; how many calls each endpoint got.
fn simulate<S: Strategy>(
    b: &mut Balancer<S>,
    latency: &HashMap<Endpoint, Duration>,
    concurrency: usize,
    calls: usize,
) -> HashMap<Endpoint, usize> {
    let mut now = Instant::now();
    let mut in_flight: Vec<(Instant, Pick)> = Vec::new();
    let mut counts = HashMap::new();
    for _ in 0..calls {
        while in_flight.len() >= concurrency {
            // The earliest answer arrives.
            let (i, _) = in_flight
                .iter()
                .enumerate()
                .min_by_key(|(_, (t, _))| *t)
                .unwrap();
            let (t, p) = in_flight.swap_remove(i);
            now = now.max(t);
            b.finish(&p, now, Outcome::Success);
        }
        let p = b.pick(now).unwrap();
        *counts.entry(p.endpoint.clone()).or_insert(0) += 1;
        in_flight.push((now + latency[&p.endpoint], p));
    }
    counts
}

fn one_slow() -> HashMap<Endpoint, Duration> {
    [
        (ep(0), Duration::from_millis(1)),
        (ep(1), Duration::from_millis(1)),
        (ep(2), Duration::from_millis(10)),
    ]
    .into()
}

/// The share of calls the slow endpoint of [`one_slow`] gets under `strategy`.
fn slow_share<S: Strategy>(strategy: S) -> f64 {
    let mut b = balancer(strategy, 3);
    let counts = simulate(&mut b, &one_slow(), 4, 3000);
    counts.get(&ep(2)).copied().unwrap_or(0) as f64 / 3000.0
}

#[test]
fn p2c_avoids_the_slow_endpoint() {
    let slow = slow_share(P2c::new());
    assert!(slow < 0.10, "the slow endpoint got {slow:.3} of calls");
}

#[test]
fn score_based_avoids_the_slow_endpoint() {
    let slow = slow_share(ScoreBased::new());
    assert!(slow < 0.10, "the slow endpoint got {slow:.3} of calls");
}

#[test]
fn a_blind_strategy_does_not_avoid_the_slow_endpoint() {
    // The measure of the two tests above: without latency, the slow one gets its third.
    let mut b = balancer(RoundRobin::new(), 3);
    let counts = simulate(&mut b, &one_slow(), 4, 3000);
    assert_eq!(counts[&ep(2)], 1000);
}

#[test]
fn score_based_avoids_an_erroring_endpoint() {
    let now = Instant::now();
    let mut b = balancer(ScoreBased::new(), 3);
    // Every answer takes 1 ms (the prior): latencies and loads are equal. ep(1) fails once
    // (below the ejection threshold): its error rate rises, and it is the one left out (a
    // blind choice would give it a third).
    let rtt = Duration::from_millis(1);
    let p = pick_until(&mut b, now, &ep(1), rtt);
    b.finish(&p, now + rtt, Outcome::Transport);
    assert_eq!(b.status()[1].health, HealthState::Degraded);
    let mut counts: HashMap<Endpoint, usize> = HashMap::new();
    for _ in 0..300 {
        let p = b.pick(now).unwrap();
        b.finish(&p, now + rtt, Outcome::Success);
        *counts.entry(p.endpoint).or_default() += 1;
    }
    assert_eq!(counts.get(&ep(1)), None, "{counts:?}");
    assert!(counts.len() == 2, "{counts:?}");
}

#[test]
fn transport_failures_eject_and_a_probe_readmits_after_the_back_off() {
    let t0 = Instant::now();
    let mut b = balancer(RoundRobin::new(), 3);
    let fail = |b: &mut Balancer<RoundRobin>, now| {
        let p = pick_until(b, now, &ep(0), Duration::ZERO);
        b.finish(&p, now, Outcome::Transport);
    };
    for i in 0..3 {
        fail(&mut b, t0);
        let want = if i < 2 {
            HealthState::Degraded
        } else {
            HealthState::Unhealthy
        };
        assert_eq!(b.status()[0].health, want);
    }
    // Ejected for 1 s: no call reaches it.
    let counts = spread(&mut b, t0 + Duration::from_millis(999), 100);
    assert_eq!(counts.get(&ep(0)), None);
    assert_eq!(b.poll_timeout(), Some(t0 + Duration::from_secs(1)));
    // Then one probe, and no other call while it is in flight.
    let t1 = t0 + Duration::from_secs(1);
    let probe = b.pick(t1).unwrap();
    assert!(probe.probe);
    assert_eq!(probe.endpoint, ep(0));
    assert_eq!(spread(&mut b, t1, 50).get(&ep(0)), None);
    // The probe fails: ejected for twice as long.
    b.finish(&probe, t1, Outcome::Timeout);
    assert_eq!(
        spread(&mut b, t1 + Duration::from_millis(1999), 50).get(&ep(0)),
        None
    );
    let t2 = t1 + Duration::from_secs(2);
    let probe = b.pick(t2).unwrap();
    assert!(probe.probe && probe.endpoint == ep(0));
    // It succeeds: re-admitted, back to its share.
    b.finish(&probe, t2, Outcome::Success);
    assert_eq!(b.status()[0].health, HealthState::Healthy);
    assert_eq!(spread(&mut b, t2, 300)[&ep(0)], 100);
}

#[test]
fn a_cancelled_probe_is_sent_again() {
    let t0 = Instant::now();
    let mut b = balancer(RoundRobin::new(), 1);
    for _ in 0..3 {
        let p = b.pick(t0).unwrap();
        b.finish(&p, t0, Outcome::Transport);
    }
    assert!(matches!(
        b.pick(t0),
        Err(PickError::AllUnhealthy { count: 1, .. })
    ));
    let t1 = t0 + Duration::from_secs(1);
    let probe = b.pick(t1).unwrap();
    assert!(probe.probe);
    b.finish(&probe, t1, Outcome::Cancelled);
    assert!(b.pick(t1).unwrap().probe);
}

#[test]
fn remote_errors_do_not_eject() {
    let now = Instant::now();
    let mut b = balancer(RoundRobin::new(), 2);
    for _ in 0..20 {
        let p = b.pick(now).unwrap();
        b.finish(&p, now, Outcome::Remote);
    }
    assert!(b.status().iter().all(|s| s.health == HealthState::Healthy));
    assert_eq!(spread(&mut b, now, 10).len(), 2);
    // The classification of the session's errors.
    let remote = CallError::Remote(RemoteError::new(ErrorCode::Handler, "no such key"));
    assert_eq!(Outcome::from(&remote), Outcome::Remote);
    assert!(!Outcome::from(&remote).is_endpoint_failure());
    let gone = CallError::Disconnected("reset".into());
    assert!(Outcome::from(&gone).is_endpoint_failure());
    assert!(Outcome::from(&CallError::Timeout).is_endpoint_failure());
    assert!(!Outcome::from(&CallError::Cancelled).is_endpoint_failure());
    // A server that refuses the call without running it counts, and the call may go elsewhere.
    let refused = CallError::Remote(RemoteError::new(ErrorCode::ShuttingDown, "bye"));
    assert_eq!(Outcome::from(&refused), Outcome::Refused);
    let mut b = balancer(RoundRobin::new(), 2);
    b.record_request(now);
    assert_eq!(
        b.failover(now, 1, Outcome::Refused, Delivery::MaybeRan, false),
        Ok(())
    );
}

#[test]
fn the_retry_budget_allows_a_share_of_calls() {
    let t0 = Instant::now();
    let cfg = BudgetConfig {
        ttl: Duration::from_secs(10),
        min_per_sec: 0,
        retry_ratio: 0.2,
    };
    let mut budget = RetryBudget::new(cfg);
    assert!(!budget.withdraw(t0), "nothing deposited");
    for _ in 0..10 {
        budget.deposit(t0);
    }
    assert!(budget.withdraw(t0));
    assert!(budget.withdraw(t0));
    assert!(!budget.withdraw(t0), "two retries for ten calls at 20 %");
    // The deposits expire with the window.
    for _ in 0..10 {
        budget.deposit(t0 + Duration::from_secs(5));
    }
    assert!(budget.withdraw(t0 + Duration::from_secs(11)));
    assert!(!budget.withdraw(t0 + Duration::from_secs(21)));
    // The reserve: retries per second whatever the traffic.
    let mut budget = RetryBudget::new(BudgetConfig {
        min_per_sec: 1,
        ..cfg
    });
    let allowed = (0..100).filter(|_| budget.withdraw(t0)).count();
    assert_eq!(allowed, 10);
}

#[test]
fn failover_retries_only_what_is_safe_and_budgeted() {
    let now = Instant::now();
    let config = LoadBalancerConfig {
        retry_budget: BudgetConfig {
            ttl: Duration::from_secs(10),
            min_per_sec: 0,
            retry_ratio: 0.5,
        },
        ..LoadBalancerConfig::default()
    };
    let mut b = Balancer::new(RoundRobin::new(), config, Rng::new(1));
    b.update(eps(3));
    for _ in 0..4 {
        b.record_request(now);
    }
    use Delivery::*;
    // Not the endpoint's fault: no retry (and nothing taken from the budget).
    assert_eq!(
        b.failover(now, 1, Outcome::Remote, MaybeRan, true),
        Err(Failover::NotEndpointFailure)
    );
    // May have run and not idempotent: no retry.
    assert_eq!(
        b.failover(now, 1, Outcome::Transport, MaybeRan, false),
        Err(Failover::NotIdempotent)
    );
    // Never sent: retried even if not idempotent; idempotent: retried.
    assert_eq!(
        b.failover(now, 1, Outcome::Transport, NotSent, false),
        Ok(())
    );
    assert_eq!(b.failover(now, 2, Outcome::Timeout, MaybeRan, true), Ok(()));
    // Two retries at most after the first attempt.
    assert_eq!(
        b.failover(now, 3, Outcome::Transport, NotSent, true),
        Err(Failover::AttemptsExhausted(3))
    );
    // Four calls at 50 % paid for two retries: the budget is spent.
    assert_eq!(
        b.failover(now, 1, Outcome::Transport, NotSent, true),
        Err(Failover::BudgetSpent)
    );
    // The next endpoint is another.
    let first = b.pick(now).unwrap();
    let second = b.pick_excluding(now, &[first.id]).unwrap();
    let third = b.pick_excluding(now, &[first.id, second.id]).unwrap();
    assert_ne!(first.endpoint, second.endpoint);
    assert!(third.endpoint != first.endpoint && third.endpoint != second.endpoint);
    assert_eq!(
        b.pick_excluding(now, &[first.id, second.id, third.id]),
        Err(PickError::Exhausted(3))
    );
}

#[test]
fn a_stream_stays_on_the_endpoint_that_opened_it() {
    let now = Instant::now();
    let mut b = balancer(RoundRobin::new(), 3);
    let (key, opened) = b.open_stream(now).unwrap();
    // Calls go round; the stream's endpoint does not move, even when it is ejected and then
    // removed by discovery.
    spread(&mut b, now, 30);
    assert_eq!(b.stream_endpoint(key).unwrap().endpoint, opened.endpoint);
    for _ in 0..3 {
        let p = pick_until(&mut b, now, &opened.endpoint, Duration::ZERO);
        b.finish(&p, now, Outcome::Transport);
    }
    let others: Vec<_> = eps(3)
        .into_iter()
        .filter(|e| *e != opened.endpoint)
        .collect();
    b.update(others);
    assert_eq!(b.stream_endpoint(key).unwrap().endpoint, opened.endpoint);
    // It counts as in flight until closed; then its removed endpoint leaves the set.
    assert_eq!(b.status().len(), 3);
    b.close_stream(key, now, Outcome::Success);
    assert_eq!(b.stream_endpoint(key), None);
    assert_eq!(b.status().len(), 2);
    assert_eq!(b.open_streams(), 0);
}

#[test]
fn discovery_updates_keep_calls_in_flight_on_removed_endpoints() {
    let now = Instant::now();
    let mut b = balancer(RoundRobin::new(), 2);
    let on0 = pick_until(&mut b, now, &ep(0), Duration::ZERO);
    let u = b.update([ep(1), ep(2)]);
    assert_eq!(u.added, vec![ep(2)]);
    assert_eq!(u.removed, vec![ep(0)]);
    assert_eq!(b.len(), 2);
    // ep(0) takes no new call but keeps its call.
    let counts = spread(&mut b, now, 20);
    assert_eq!(counts.get(&ep(0)), None);
    assert!(
        b.status()
            .iter()
            .any(|s| s.endpoint == ep(0) && s.removed && s.in_flight == 1)
    );
    b.finish(&on0, now, Outcome::Success);
    assert!(b.status().iter().all(|s| s.endpoint != ep(0)));
    // A remaining endpoint keeps its state across an update.
    let calls = b
        .status()
        .iter()
        .find(|s| s.endpoint == ep(1))
        .unwrap()
        .calls;
    b.update([ep(1), ep(2)]);
    assert_eq!(
        b.status()
            .iter()
            .find(|s| s.endpoint == ep(1))
            .unwrap()
            .calls,
        calls
    );
    b.update([]);
    assert_eq!(b.pick(now), Err(PickError::NoEndpoints));
}

#[test]
fn refresh_is_due_once_per_interval() {
    let t0 = Instant::now();
    let mut b = balancer(RoundRobin::new(), 1);
    assert!(!b.refresh_due(t0), "no interval, no refresh");
    b.set_refresh_interval(Some(Duration::from_secs(30)));
    assert!(b.refresh_due(t0));
    assert!(!b.refresh_due(t0 + Duration::from_secs(29)));
    assert!(b.refresh_due(t0 + Duration::from_secs(30)));
}

#[test]
fn the_pool_reuses_opens_and_closes_connections_by_its_rules() {
    let now = Instant::now();
    let cfg = PoolConfig {
        max_connections: 2,
        target_in_flight: 4,
        idle_timeout: Duration::from_secs(60),
    };
    let slot = |in_flight, healthy| Slot {
        in_flight,
        healthy,
        last_used: now,
    };
    assert_eq!(cfg.checkout(&[], 0), Checkout::Connect);
    assert_eq!(cfg.checkout(&[], 2), Checkout::Wait);
    assert_eq!(cfg.checkout(&[slot(3, true)], 0), Checkout::Use(0));
    assert_eq!(cfg.checkout(&[slot(4, true)], 0), Checkout::Connect);
    assert_eq!(
        cfg.checkout(&[slot(4, true), slot(1, true)], 0),
        Checkout::Use(1)
    );
    // Full: the least loaded, past the target.
    assert_eq!(
        cfg.checkout(&[slot(9, true), slot(5, true)], 0),
        Checkout::Use(1)
    );
    assert_eq!(cfg.checkout(&[slot(4, true)], 1), Checkout::Use(0));
    // Broken connections are never used and are dropped; idle ones after the timeout.
    assert_eq!(cfg.checkout(&[slot(0, false)], 0), Checkout::Connect);
    assert!(cfg.is_expired(&slot(3, false), now));
    assert!(!cfg.is_expired(&slot(0, true), now + Duration::from_secs(59)));
    assert!(cfg.is_expired(&slot(0, true), now + Duration::from_secs(60)));
    assert!(!cfg.is_expired(&slot(1, true), now + Duration::from_secs(600)));
}

#[test]
fn endpoints_read_back_what_they_display() {
    for s in [
        "tcp://127.0.0.1:8001",
        "unix:///tmp/x.sock",
        "shm://svc",
        "quic://h:1",
    ] {
        let e: Endpoint = s.parse().unwrap();
        assert_eq!(e.to_string(), s);
    }
    assert_eq!(
        Endpoint::tcp_from_str("127.0.0.1:8001").unwrap(),
        "tcp://127.0.0.1:8001".parse().unwrap()
    );
    assert!(Endpoint::tcp_from_str("localhost").is_err());
    assert!("127.0.0.1:1".parse::<Endpoint>().is_err());
    assert!("shm://".parse::<Endpoint>().is_err());
}
