//! The retry budget as a table of scripts: `D` counts a request (deposit), `W` asks for a
//! retry (withdraw); the expected column lists each `W`'s answer, `+` granted, `-` refused.
//! "Drained" rows first spend the reserve, so they show what requests alone earn.

use super::*;

fn run(budget: &RetryBudget, script: &str) -> String {
    script
        .chars()
        .filter_map(|op| match op {
            'D' => {
                budget.deposit();
                None
            }
            'W' => Some(if budget.try_withdraw() { '+' } else { '-' }),
            other => panic!("unknown op {other:?}"),
        })
        .collect()
}

#[test]
fn retries_are_earned_by_requests_within_the_percentage_and_the_reserve() {
    let d = |n: usize| "D".repeat(n);
    let w = |n: usize| "W".repeat(n);
    // `(case, budget_percent, drained first, script, answers to the withdrawals)`.
    let rows: Vec<(&str, u32, bool, String, String)> = vec![
        (
            "a fresh budget lends the reserve of ten",
            20,
            false,
            w(11),
            format!("{}-", "+".repeat(10)),
        ),
        ("drained: nothing to withdraw", 20, true, w(1), "-".into()),
        ("20%: four requests are not a retry", 20, true, d(4) + "W", "-".into()),
        ("20%: the fifth request earns one", 20, true, d(4) + "WDW", "-+".into()),
        ("100%: one retry per request", 100, true, "DWDWW".into(), "++-".into()),
        ("50%: halves add up", 50, true, "DWDWDDW".into(), "-++".into()),
        ("1%: a hundred requests earn one", 1, true, d(99) + "WDW", "-+".into()),
        ("0%: requests earn nothing", 0, true, d(1000) + "W", "-".into()),
        ("savings stop at the reserve", 100, true, d(15) + &w(11), format!("{}-", "+".repeat(10))),
        ("a refused withdrawal costs nothing", 100, true, "WWDW".into(), "--+".into()),
    ];
    for (case, percent, drained, script, want) in rows {
        let budget = RetryBudget::new(percent);
        if drained {
            while budget.try_withdraw() {}
        }
        assert_eq!(run(&budget, &script), want, "{case} ({percent}%, {script})");
    }
}
