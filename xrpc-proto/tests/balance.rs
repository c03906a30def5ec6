//! The load-balancing policy, driven by hand: a fake clock, a seeded RNG, outcomes reported as
//! an adapter would. Every strategy's spread, health (ejection, probe, re-admission), the
//! retry budget, a call's attempts (failover, connections refused, probes), stream affinity,
//! discovery updates and their schedule, and the pool's rules.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use xrpc_proto::balance::{
    Attempts, Balancer, BalancerEvent, BudgetConfig, Checkout, DISCOVERY_RETRY, Delivery,
    Discovered, Endpoint, FailoverConfig, HealthState, LeastConnections, LoadBalancerConfig,
    Outcome, P2c, PeakEwma, Pick, PickError, PoolConfig, Random, RetryBudget, Rng, RoundRobin,
    ScoreBased, Slot, Strategy, WeightedRoundRobin,
};
use xrpc_proto::{CallError, ErrorCode, RemoteError, RpcError, TransportError};

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
fn ejections_and_readmissions_are_events_while_recorded() {
    let t0 = Instant::now();
    let mut b = balancer(RoundRobin::new(), 1);
    let end = |b: &mut Balancer<RoundRobin>, now, outcome| {
        let p = b.pick(now).unwrap();
        b.finish(&p, now, outcome);
    };
    // Not recording: nothing kept.
    for _ in 0..3 {
        end(&mut b, t0, Outcome::Transport);
    }
    assert_eq!(b.poll_event(), None);
    b.record_events(true);
    let t1 = t0 + Duration::from_secs(1);
    // The probe fails: ejected again, for twice as long.
    end(&mut b, t1, Outcome::Timeout);
    let ejected = |until, failures| BalancerEvent::Ejected {
        endpoint: ep(0),
        until,
        failures,
    };
    assert_eq!(
        b.poll_event(),
        Some(ejected(t1 + Duration::from_secs(2), 4))
    );
    assert_eq!(b.poll_event(), None);
    // A cancelled probe is no ejection; a successful one re-admits.
    let t2 = t1 + Duration::from_secs(2);
    end(&mut b, t2, Outcome::Cancelled);
    assert_eq!(b.poll_event(), None);
    end(&mut b, t2, Outcome::Success);
    assert_eq!(
        b.poll_event(),
        Some(BalancerEvent::Readmitted { endpoint: ep(0) })
    );
    // Failures past the threshold eject.
    for _ in 0..3 {
        end(&mut b, t2, Outcome::Transport);
    }
    assert_eq!(
        b.poll_event(),
        Some(ejected(t2 + Duration::from_secs(1), 3))
    );
    assert_eq!(b.poll_event(), None);
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
    let mut call = Attempts::call(false);
    let first = call.start(&mut b, now).unwrap();
    let refused = RpcError::from(refused);
    assert_eq!(Delivery::of(&refused), Delivery::MaybeRan);
    let second = call.call_failed(&mut b, now, refused).unwrap();
    assert_ne!(second.endpoint, first.endpoint);
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
fn discovery_is_asked_first_then_each_interval_and_soon_after_a_failure() {
    let t0 = Instant::now();
    let mut b = balancer(RoundRobin::new(), 1);
    // Never answered: due at once, whatever the interval.
    assert!(b.refresh_due(t0));
    assert_eq!(b.next_refresh(), None);
    // A discovery without an interval is asked once.
    b.refreshed(t0, true);
    assert!(!b.refresh_due(t0 + Duration::from_secs(3600)));
    assert_eq!(b.next_refresh(), None);
    // With one, again each interval.
    let mut b = balancer(RoundRobin::new(), 1);
    b.set_refresh_interval(Some(Duration::from_secs(30)));
    b.refreshed(t0, true);
    assert!(!b.refresh_due(t0 + Duration::from_secs(29)));
    assert!(b.refresh_due(t0 + Duration::from_secs(30)));
    assert_eq!(b.next_refresh(), Some(t0 + Duration::from_secs(30)));
    assert_eq!(b.poll_timeout(), Some(t0 + Duration::from_secs(30)));
    // A failure is retried within DISCOVERY_RETRY, not an interval later.
    let t1 = t0 + Duration::from_secs(30);
    b.refreshed(t1, false);
    assert_eq!(b.next_refresh(), Some(t1 + DISCOVERY_RETRY));
    b.refreshed(t1 + DISCOVERY_RETRY, true);
    assert_eq!(
        b.next_refresh(),
        Some(t1 + DISCOVERY_RETRY + Duration::from_secs(30))
    );
}

#[test]
fn the_pool_reuses_opens_and_closes_connections_by_its_rules() {
    let now = Instant::now();
    let cfg = PoolConfig {
        max_connections: 2,
        max_total_connections: 10,
        target_in_flight: 4,
        idle_timeout: Duration::from_secs(60),
    };
    let slot = |in_flight, healthy| Slot {
        in_flight,
        healthy,
        last_used: now,
    };
    assert_eq!(cfg.checkout(&[], 0, 0), Checkout::Connect);
    assert_eq!(cfg.checkout(&[], 2, 2), Checkout::Wait);
    assert_eq!(cfg.checkout(&[slot(3, true)], 0, 1), Checkout::Use(0));
    assert_eq!(cfg.checkout(&[slot(4, true)], 0, 1), Checkout::Connect);
    assert_eq!(
        cfg.checkout(&[slot(4, true), slot(1, true)], 0, 2),
        Checkout::Use(1)
    );
    // Full: the least loaded, past the target.
    assert_eq!(
        cfg.checkout(&[slot(9, true), slot(5, true)], 0, 2),
        Checkout::Use(1)
    );
    assert_eq!(cfg.checkout(&[slot(4, true)], 1, 2), Checkout::Use(0));
    // Broken connections are never used and are dropped; idle ones after the timeout.
    assert_eq!(cfg.checkout(&[slot(0, false)], 0, 1), Checkout::Connect);
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

#[test]
fn at_the_total_cap_the_least_recently_used_idle_connection_makes_room() {
    let t0 = Instant::now();
    let cfg = PoolConfig {
        max_connections: 2,
        max_total_connections: 3,
        target_in_flight: 4,
        idle_timeout: Duration::from_secs(60),
    };
    let slot = |in_flight, secs| Slot {
        in_flight,
        healthy: true,
        last_used: t0 + Duration::from_secs(secs),
    };
    // An endpoint with no connection, the pool full: room is to be made.
    assert_eq!(cfg.checkout(&[], 0, 3), Checkout::MakeRoom);
    // One already being opened: wait for it instead.
    assert_eq!(cfg.checkout(&[], 1, 3), Checkout::Wait);
    // An endpoint with a connection past its target uses it rather than close another's.
    assert_eq!(cfg.checkout(&[slot(7, 0)], 0, 3), Checkout::Use(0));
    assert_eq!(cfg.checkout(&[slot(7, 0)], 0, 2), Checkout::Connect);
    // The victim: the idle one used longest ago; none idle, none.
    let slots = [slot(0, 5), slot(2, 1), slot(0, 3)];
    assert_eq!(cfg.victim(slots), Some(2));
    assert_eq!(cfg.victim([slot(1, 0), slot(3, 0)]), None);
}

/// Errors as the adapter reports them.
fn refused() -> RpcError {
    RpcError::Transport(TransportError::ConnectionFailed(
        "connect failed: Connection refused (os error 111)".into(),
    ))
}

fn reset() -> RpcError {
    RpcError::Disconnected("connection reset".into())
}

fn no_budget() -> LoadBalancerConfig {
    LoadBalancerConfig {
        retry_budget: BudgetConfig {
            ttl: Duration::from_secs(10),
            min_per_sec: 0,
            retry_ratio: 0.0,
        },
        ..LoadBalancerConfig::default()
    }
}

fn health_of<S: Strategy>(b: &Balancer<S>, e: &Endpoint) -> HealthState {
    b.status()
        .into_iter()
        .find(|s| s.endpoint == *e)
        .unwrap()
        .health
}

#[test]
fn a_refused_connection_ejects_at_once_and_the_call_goes_on_elsewhere() {
    let now = Instant::now();
    // No retry budget at all: a refused connection still goes on to another endpoint.
    let mut b = Balancer::new(RoundRobin::new(), no_budget(), Rng::new(1));
    b.update(eps(3));
    let mut call = Attempts::call(false);
    let first = call.start(&mut b, now).unwrap();
    let second = call.connect_failed(&mut b, now, refused()).unwrap();
    assert_ne!(second.endpoint, first.endpoint);
    // One refusal ejected it (not three).
    assert_eq!(health_of(&b, &first.endpoint), HealthState::Unhealthy);
    assert_eq!(call.succeeded(&mut b, now), None);
    assert!(b.status().iter().all(|s| s.in_flight == 0));
    // The next calls avoid it until its back-off has passed.
    let counts = spread(&mut b, now + Duration::from_millis(999), 20);
    assert_eq!(counts.get(&first.endpoint), None);
}

#[test]
fn a_call_that_may_have_run_is_retried_only_if_idempotent_and_budgeted() {
    let now = Instant::now();
    let mut b = balancer(RoundRobin::new(), 3);
    // Not idempotent: the error names the endpoint and says why it was not retried.
    let mut call = Attempts::call(false);
    let p = call.start(&mut b, now).unwrap();
    let e = call.call_failed(&mut b, now, reset()).unwrap_err();
    let RpcError::Disconnected(m) = &e else {
        panic!("{e}")
    };
    assert!(
        m.contains(&p.endpoint.to_string()) && m.contains("not idempotent"),
        "{m}"
    );
    // Idempotent: retried on another endpoint.
    let mut call = Attempts::call(true);
    let p = call.start(&mut b, now).unwrap();
    let next = call.call_failed(&mut b, now, reset()).unwrap();
    assert_ne!(next.endpoint, p.endpoint);
    call.succeeded(&mut b, now);
    // An application error is the answer: not retried, not explained.
    let mut call = Attempts::call(true);
    call.start(&mut b, now).unwrap();
    let e = call
        .call_failed(&mut b, now, RpcError::server("no such key"))
        .unwrap_err();
    assert!(matches!(e, RpcError::ServerError { .. }), "{e}");
    // Without budget, an idempotent call is not retried either.
    let mut b = Balancer::new(RoundRobin::new(), no_budget(), Rng::new(1));
    b.update(eps(3));
    let mut call = Attempts::call(true);
    call.start(&mut b, now).unwrap();
    let e = call.call_failed(&mut b, now, reset()).unwrap_err();
    assert!(e.to_string().contains("retry budget is spent"), "{e}");
}

#[test]
fn retries_stop_at_the_attempts_allowed_and_the_budget() {
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
    b.update(eps(5));
    // Three calls at 50 % pay for one retry and a half: this one's first retry is paid.
    for _ in 0..2 {
        b.record_request(now);
    }
    let mut call = Attempts::call(true);
    let mut tried = vec![call.start(&mut b, now).unwrap().endpoint];
    tried.push(call.call_failed(&mut b, now, reset()).unwrap().endpoint);
    // The second is not: 1.5 deposited, 1 withdrawn.
    let e = call.call_failed(&mut b, now, reset()).unwrap_err();
    assert!(e.to_string().contains("retry budget is spent"), "{e}");
    tried.dedup();
    assert_eq!(tried.len(), 2, "each attempt on another endpoint");
    // With budget enough, two retries after the first attempt, then the error says so.
    let mut b = balancer(RoundRobin::new(), 5);
    let mut call = Attempts::call(true);
    call.start(&mut b, now).unwrap();
    call.call_failed(&mut b, now, reset()).unwrap();
    call.call_failed(&mut b, now, RpcError::Timeout).unwrap();
    let e = call.call_failed(&mut b, now, reset()).unwrap_err();
    assert!(e.to_string().contains("3 attempts made"), "{e}");
    assert_eq!(call.made(), 3);
}

#[test]
fn refused_connections_cost_no_budget_but_are_bounded_too() {
    let now = Instant::now();
    let failover = FailoverConfig::default();
    // Twenty endpoints that all refuse, no budget: the first attempt and the free retries.
    let mut b = Balancer::new(RoundRobin::new(), no_budget(), Rng::new(1));
    b.update(eps(20));
    let mut call = Attempts::call(false);
    call.start(&mut b, now).unwrap();
    let e = loop {
        match call.connect_failed(&mut b, now, refused()) {
            Ok(_) => continue,
            Err(e) => break e,
        }
    };
    assert_eq!(call.made(), 1 + failover.max_connect_retries as usize);
    assert!(e.to_string().contains("retry budget is spent"), "{e}");
    // With budget, the retries allowed after them.
    let mut b = balancer(RoundRobin::new(), 20);
    let mut call = Attempts::call(false);
    call.start(&mut b, now).unwrap();
    let e = loop {
        match call.connect_failed(&mut b, now, refused()) {
            Ok(_) => continue,
            Err(e) => break e,
        }
    };
    let made = 1 + failover.max_connect_retries + failover.max_attempts;
    assert_eq!(call.made(), made as usize);
    assert!(
        e.to_string().contains(&format!("{made} attempts made")),
        "{e}"
    );
    // A connection attempt that timed out cost its timeout: it counts as a retry.
    let mut b = Balancer::new(RoundRobin::new(), no_budget(), Rng::new(1));
    b.update(eps(3));
    let mut call = Attempts::call(false);
    call.start(&mut b, now).unwrap();
    let timed_out = RpcError::Transport(TransportError::Timeout);
    assert!(call.connect_failed(&mut b, now, timed_out).is_err());
    // Too few endpoints: the error says none is left.
    let mut b = balancer(RoundRobin::new(), 2);
    let mut call = Attempts::call(false);
    call.start(&mut b, now).unwrap();
    call.connect_failed(&mut b, now, refused()).unwrap();
    let e = call.connect_failed(&mut b, now, refused()).unwrap_err();
    assert!(
        e.to_string()
            .contains("not retried: no other endpoint can take the call: all 2 available"),
        "{e}"
    );
}

#[test]
fn a_call_probes_one_ejected_endpoint_at_most() {
    let t0 = Instant::now();
    let mut b = balancer(RoundRobin::new(), 6);
    // Four endpoints refuse and are ejected; two answer.
    for e in eps(4) {
        b.connect_failed(&e, t0, Outcome::Transport);
    }
    // Past the back-off all four are due for a probe: a call's first attempt probes one, and
    // when it is refused again the call goes to an admitted endpoint, not to the next probe.
    for _ in 0..2 {
        let p = b.pick(t0).unwrap();
        b.finish(&p, t0, Outcome::Success);
    }
    let t1 = t0 + Duration::from_secs(1);
    for _ in 0..4 {
        let mut call = Attempts::call(false);
        let first = call.start(&mut b, t1).unwrap();
        assert!(first.probe, "{first:?}");
        let second = call.connect_failed(&mut b, t1, refused()).unwrap();
        assert!(!second.probe && eps(6)[4..].contains(&second.endpoint));
        call.succeeded(&mut b, t1);
    }
    // Each failed probe doubled its endpoint's back-off: no probe is due now.
    let mut call = Attempts::call(false);
    assert!(!call.start(&mut b, t1).unwrap().probe);
}

#[test]
fn thousands_of_refusing_endpoints_and_one_live_one() {
    // The scenario of a discovery gone wrong, at the level of the policy (tests/load_balancing.rs
    // runs it over TCP with 10,000): every connection but to one endpoint is refused.
    // Refusals eject at once and cost no budget, and a call explores (a probe, or an endpoint
    // never measured) with its first attempt only, so that once the live endpoint has answered
    // every call succeeds, through the probes' return after the back-off too.
    let mut now = Instant::now();
    let n = 2_000u32;
    let endpoints: Vec<Endpoint> = (0..=n)
        .map(|i| Endpoint::tcp_from_str(&format!("127.1.{}.{}:80", i / 250, i % 250 + 1)).unwrap())
        .collect();
    let live = endpoints[n as usize / 2].clone();
    let mut b = Balancer::new(P2c::new(), no_budget(), Rng::new(3));
    b.update(endpoints);
    let connect_cost = Duration::from_micros(200);
    let mut failed_before_live = 0;
    let mut attempts_after = Vec::new();
    let mut answered = false;
    let end = now + Duration::from_secs(4);
    while now < end {
        let mut call = Attempts::call(false);
        let mut pick = call.start(&mut b, now).unwrap();
        let ok = loop {
            now += connect_cost;
            if pick.endpoint == live {
                call.succeeded(&mut b, now);
                break true;
            }
            match call.connect_failed(&mut b, now, refused()) {
                Ok(next) => pick = next,
                Err(_) => break false,
            }
        };
        if answered {
            assert!(ok, "a call failed after the live endpoint answered");
            attempts_after.push(call.made());
        } else if ok {
            answered = true;
        } else {
            failed_before_live += 1;
        }
    }
    let most = attempts_after.iter().max().copied().unwrap_or(0);
    let probes: usize = attempts_after.iter().filter(|&&a| a == 2).count();
    // The probes came back (ejected for 1 s, then 2 s) within the run, and were tried.
    assert!(probes > n as usize, "{probes}");
    println!(
        "failed calls before the live endpoint answered: {failed_before_live}; after: none of \
         {}, each in at most {most} attempts ({probes} with a refused attempt first)",
        attempts_after.len()
    );
    assert!(most <= 2, "{most}");
}

#[test]
fn a_stream_attempt_binds_its_endpoint_and_an_abandoned_one_ends_cancelled() {
    let now = Instant::now();
    let mut b = balancer(RoundRobin::new(), 3);
    let mut open = Attempts::stream();
    let first = open.start(&mut b, now).unwrap();
    // A stream that may have been opened is not retried (it is not idempotent).
    let e = open.call_failed(&mut b, now, reset()).unwrap_err();
    assert!(e.to_string().contains("not idempotent"), "{e}");
    let mut open = Attempts::stream();
    let refusing = open.start(&mut b, now).unwrap();
    assert_ne!(refusing.endpoint, first.endpoint);
    let second = open.connect_failed(&mut b, now, refused()).unwrap();
    assert_ne!(second.endpoint, refusing.endpoint);
    let key = open.succeeded(&mut b, now).unwrap();
    assert_eq!(b.stream_endpoint(key).unwrap().endpoint, second.endpoint);
    assert_eq!(b.open_streams(), 1);
    b.close_stream(key, now, Outcome::Success);
    // A call dropped during its attempt: cancelled, nothing counted against the endpoint.
    let mut call = Attempts::call(true);
    let p = call.start(&mut b, now).unwrap();
    call.abandon(&mut b, now);
    let s = b.status().into_iter().find(|s| s.id == p.id).unwrap();
    assert_eq!((s.in_flight, s.health), (0, HealthState::Healthy));
}

#[test]
fn latency_is_counted_from_the_connection_not_from_the_pick() {
    let t0 = Instant::now();
    let mut b = balancer(RoundRobin::new(), 1);
    let mut call = Attempts::call(false);
    call.start(&mut b, t0).unwrap();
    // 5 ms to connect, then 1 ms for the call.
    call.connected(t0 + Duration::from_millis(5));
    call.succeeded(&mut b, t0 + Duration::from_millis(6));
    assert_eq!(b.status()[0].latency, Duration::from_millis(1));
}

/// Sequential calls, each answered after the latency of its endpoint; how many each got.
fn sequential<S: Strategy>(
    b: &mut Balancer<S>,
    t0: Instant,
    latency: &HashMap<Endpoint, Duration>,
    calls: usize,
) -> (HashMap<Endpoint, usize>, Instant) {
    let mut now = t0;
    let mut counts = HashMap::new();
    for _ in 0..calls {
        let p = b.pick(now).unwrap();
        now += latency[&p.endpoint];
        b.finish(&p, now, Outcome::Success);
        *counts.entry(p.endpoint).or_insert(0) += 1;
    }
    (counts, now)
}

#[test]
fn p2c_tries_every_endpoint_with_sequential_calls() {
    // Three healthy servers answering in 0.4 ms and one call at a time: with the 1 ms prior
    // as the load of an endpoint never measured, the first two measured won every pairing and
    // the third was never tried (0 of 300 calls).
    let t0 = Instant::now();
    let fast = Duration::from_micros(400);
    let latency: HashMap<Endpoint, Duration> = eps(3).into_iter().map(|e| (e, fast)).collect();
    for seed in 0..20 {
        let mut b = Balancer::new(P2c::new(), LoadBalancerConfig::default(), Rng::new(seed));
        b.update(eps(3));
        let (counts, _) = sequential(&mut b, t0, &latency, 300);
        assert_eq!(counts.len(), 3, "seed {seed}: {counts:?}");
    }
    // One found later, when the others are measured, is tried at once too.
    let mut b = Balancer::new(P2c::new(), LoadBalancerConfig::default(), Rng::new(1));
    b.update(eps(2));
    let (_, now) = sequential(&mut b, t0, &latency, 100);
    b.update(eps(3));
    let (counts, _) = sequential(&mut b, now, &latency, 10);
    assert!(counts.contains_key(&ep(2)), "{counts:?}");
}

#[test]
fn an_endpoint_slow_once_is_tried_again_as_its_estimate_decays() {
    // ep(0) answers once in 20 ms, then like the others in 1 ms: its estimate decays toward
    // zero (tower's peak EWMA), so sequential calls come back to it within seconds.
    let t0 = Instant::now();
    let ms = Duration::from_millis(1);
    let mut b = balancer(P2c::new(), 3);
    let p = pick_until(&mut b, t0, &ep(0), ms);
    b.finish(&p, t0 + ms * 20, Outcome::Success);
    let latency: HashMap<Endpoint, Duration> = eps(3).into_iter().map(|e| (e, ms)).collect();
    let (first, now) = sequential(&mut b, t0 + ms * 20, &latency, 300);
    let (later, _) = sequential(&mut b, now + Duration::from_secs(3), &latency, 300);
    let share = |c: &HashMap<Endpoint, usize>| *c.get(&ep(0)).unwrap_or(&0);
    assert!(share(&first) < 30, "{first:?}");
    assert!(share(&later) > 60, "{later:?}");
}

fn many(prefix: u8, n: u32) -> Vec<Endpoint> {
    (0..n)
        .map(|i| {
            Endpoint::tcp_from_str(&format!("127.{prefix}.{}.{}:80", i / 250, i % 250 + 1)).unwrap()
        })
        .collect()
}

#[test]
fn discovery_updates_are_linear_and_their_difference_is_computed_apart() {
    // 10,000 endpoints, then half of them replaced: was quadratic (an `any` over the set for
    // every endpoint found: 0.34 s and 0.66 s in release on the reference machine). Timings are
    // printed, not asserted.
    let first = many(1, 10_000);
    let mut second = first[5_000..].to_vec();
    second.extend(many(2, 5_000));

    let mut b = Balancer::new(
        RoundRobin::new(),
        LoadBalancerConfig::default(),
        Rng::new(1),
    );
    let t = Instant::now();
    let u = b.update(first.clone());
    let added = t.elapsed();
    assert_eq!(
        (u.added.len(), u.removed.len(), b.len()),
        (10_000, 0, 10_000)
    );
    let t = Instant::now();
    let u = b.update(second.clone());
    let replaced = t.elapsed();
    assert_eq!(
        (u.added.len(), u.removed.len(), b.len()),
        (5_000, 5_000, 10_000)
    );
    assert_eq!(u.added, second[5_000..]);

    // The same through `Discovered`: the difference outside, only the changes applied.
    let mut apart = Balancer::new(
        RoundRobin::new(),
        LoadBalancerConfig::default(),
        Rng::new(1),
    );
    let mut discovered = Discovered::new();
    let u = discovered.replace(first);
    apart.apply(&u.added, &u.removed);
    let t = Instant::now();
    let u = discovered.replace(second.iter().cloned().chain(second.iter().cloned()));
    let diff = t.elapsed();
    // In parts, as an adapter holding the balancer under a lock does.
    let t = Instant::now();
    for part in u.removed.chunks(512) {
        apart.apply(&[], part);
    }
    for part in u.added.chunks(512) {
        apart.apply(part, &[]);
    }
    let applied = t.elapsed();
    assert_eq!((u.added.len(), u.removed.len()), (5_000, 5_000));
    let set = |b: &Balancer<RoundRobin>| {
        let mut v: Vec<Endpoint> = b.status().into_iter().map(|s| s.endpoint).collect();
        v.sort();
        v
    };
    assert_eq!(set(&apart), set(&b));
    // Nothing changed: nothing to apply.
    assert!(discovered.replace(second).is_empty());
    println!(
        "10,000 endpoints: update {added:?} (all new), {replaced:?} (5,000 replaced); \
         apart: difference {diff:?} (answer given twice), apply {applied:?} in 20 parts"
    );
}

#[test]
fn a_peak_is_taken_at_once_and_an_idle_estimate_decays_toward_zero() {
    let t0 = Instant::now();
    let ms = Duration::from_millis(1);
    let mut e = PeakEwma::new(ms, Duration::from_secs(1));
    assert!(!e.is_measured());
    assert_eq!(e.estimate_ns(t0 + Duration::from_secs(5)), 1e6, "the prior");
    e.observe(t0, ms * 10);
    assert_eq!(e.estimate_ns(t0), 1e7);
    // One time constant later, a third of it is left (e⁻¹).
    let later = e.estimate_ns(t0 + Duration::from_secs(1));
    assert!((later - 1e7 / std::f64::consts::E).abs() < 1.0, "{later}");
    // A fast answer right after the peak leaves it; once the peak has decayed below it,
    // the answer is the estimate.
    e.observe(t0 + Duration::from_millis(1), ms);
    assert!(e.last_estimate_ns() > 9e6);
    e.observe(t0 + Duration::from_secs(3), ms);
    assert_eq!(e.last_estimate_ns(), 1e6);
}
