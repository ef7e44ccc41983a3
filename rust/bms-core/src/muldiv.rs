//! Exact `x · m / d` on 64-bit integers.
//!
//! Charge counts in nA·s reach 1.44 · 10^18 (the largest bank), so scaling one by a ratio
//! overflows 64 bits in the product. 128-bit arithmetic would be exact too, but on the
//! Cortex-M4 each 128-bit division pulls in about a kilobyte of code where it is used; this
//! shift-and-subtract form is exact, a few dozen instructions, and fast enough for the few
//! scalings per persist or settings change (never per control step in a loop).

/// How [`mul_div`] rounds the quotient.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rounding {
    /// Towards zero (floor, as every value here is non-negative).
    Down,
    /// To the nearest, halves up.
    Nearest,
}

/// `x · m / d` rounded as asked, exact for every input; `None` when `d` is 0, `d` exceeds
/// `i64::MAX` or the quotient does not fit a `u64`.
pub fn mul_div(x: u64, m: u64, d: u64, rounding: Rounding) -> Option<u64> {
    if d == 0 || d > i64::MAX as u64 {
        return None;
    }
    // x = q·d + r, so x·m = q·m·d + r·m: the whole part first, then r·m / d with r < d.
    let whole = (x / d).checked_mul(m)?;
    let (mut quotient, mut remainder) = (0u64, 0u64);
    let remainder_of_x = x % d;
    // Horner over the bits of m, keeping (quotient, remainder) of remainder_of_x · (m's bits so
    // far) / d. remainder < d ≤ 2^63, so doubling it or adding remainder_of_x (< d) cannot
    // overflow, and one subtraction brings it back below d.
    for bit in (0..u64::BITS - m.leading_zeros()).rev() {
        quotient = quotient.checked_mul(2)?;
        remainder *= 2;
        if remainder >= d {
            remainder -= d;
            quotient += 1;
        }
        if (m >> bit) & 1 == 1 {
            remainder += remainder_of_x;
            if remainder >= d {
                remainder -= d;
                quotient = quotient.checked_add(1)?;
            }
        }
    }
    if rounding == Rounding::Nearest && remainder >= d - d / 2 {
        quotient = quotient.checked_add(1)?;
    }
    whole.checked_add(quotient)
}

/// `x · m / d` for a signed `x`, rounded towards zero, saturating at the ends of `i64`;
/// 0 when `d` is 0.
pub fn scale_signed(x: i64, m: u32, d: u32) -> i64 {
    let magnitude = mul_div(x.unsigned_abs(), u64::from(m), u64::from(d), Rounding::Down);
    match magnitude.map(i64::try_from) {
        Some(Ok(value)) if x < 0 => -value,
        Some(Ok(value)) => value,
        _ if d == 0 => 0,
        _ if x < 0 => i64::MIN,
        _ => i64::MAX,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reference(x: u64, m: u64, d: u64, rounding: Rounding) -> Option<u64> {
        let (x, m, d) = (u128::from(x), u128::from(m), u128::from(d));
        let product = x * m;
        let quotient = match rounding {
            Rounding::Down => product / d,
            Rounding::Nearest => (product + d / 2) / d,
        };
        u64::try_from(quotient).ok()
    }

    #[test]
    fn edges_match_the_128_bit_result() {
        let max_d = i64::MAX as u64;
        let values = [
            0,
            1,
            2,
            3,
            999,
            1000,
            65_535,
            1 << 32,
            max_d - 1,
            max_d,
            u64::MAX,
        ];
        for &x in &values {
            for &m in &values {
                for &d in &values[1..values.len() - 1] {
                    for rounding in [Rounding::Down, Rounding::Nearest] {
                        assert_eq!(
                            mul_div(x, m, d, rounding),
                            reference(x, m, d, rounding),
                            "{x} * {m} / {d} {rounding:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn refuses_a_zero_or_too_large_divisor() {
        assert_eq!(mul_div(1, 1, 0, Rounding::Down), None);
        assert_eq!(mul_div(1, 1, i64::MAX as u64 + 1, Rounding::Nearest), None);
        assert_eq!(scale_signed(5, 1, 0), 0);
    }

    #[test]
    fn halves_round_up_and_signed_values_round_towards_zero() {
        assert_eq!(mul_div(1, 1, 2, Rounding::Nearest), Some(1));
        assert_eq!(mul_div(1, 1, 3, Rounding::Nearest), Some(0));
        assert_eq!(mul_div(2, 1, 3, Rounding::Nearest), Some(1));
        assert_eq!(scale_signed(-7, 1, 2), -3);
        assert_eq!(scale_signed(7, 1, 2), 3);
        assert_eq!(scale_signed(i64::MIN, 2, 1), i64::MIN);
        assert_eq!(scale_signed(i64::MAX, 2, 1), i64::MAX);
    }

    proptest! {
        #[test]
        fn mul_div_is_exact(
            x in any::<u64>(),
            m in any::<u64>(),
            d in 1..=i64::MAX as u64,
            nearest in any::<bool>(),
        ) {
            let rounding = if nearest { Rounding::Nearest } else { Rounding::Down };
            prop_assert_eq!(mul_div(x, m, d, rounding), reference(x, m, d, rounding));
        }

        #[test]
        fn mul_div_is_exact_for_charge_sized_values(
            x in 0..2_000_000_000_000_000_000u64,
            m in 0..=u64::from(u32::MAX),
            d in 1..=2_000_000_000_000_000_000u64,
            nearest in any::<bool>(),
        ) {
            let rounding = if nearest { Rounding::Nearest } else { Rounding::Down };
            prop_assert_eq!(mul_div(x, m, d, rounding), reference(x, m, d, rounding));
        }

        #[test]
        fn scale_signed_matches_the_128_bit_result(x in any::<i64>(), m in any::<u32>(), d in 1..=u32::MAX) {
            let exact = i128::from(x) * i128::from(m) / i128::from(d);
            let want = i64::try_from(exact).unwrap_or(if exact < 0 { i64::MIN } else { i64::MAX });
            prop_assert_eq!(scale_signed(x, m, d), want);
        }
    }
}
