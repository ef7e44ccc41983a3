//! Shifting the elements of small arrays by one place without `memmove`.
//!
//! `rotate_right`, `Vec::insert` and friends compile to a `memmove` call; on the target that
//! links compiler-builtins' speed-tuned memmove, more flash (docs/ffi.md) than these few shifts of
//! at most 50 elements are worth. Moving elements one by one through a carried value or a swap costs a few
//! instructions more per call and no library code.

/// Puts `newest` at the front of `slots`, moving every element one place back; the last one
/// drops out.
pub(crate) fn push_front<T>(slots: &mut [T], newest: T) {
    let mut carried = newest;
    for slot in slots {
        carried = core::mem::replace(slot, carried);
    }
}

/// Moves the last element of `items` to `index`, moving the elements from `index` one place
/// back; nothing happens when `index` is past the end.
pub(crate) fn move_last_to<T>(items: &mut [T], index: usize) {
    let Some(tail) = items.get_mut(index..) else {
        return;
    };
    for at in (1..tail.len()).rev() {
        tail.swap(at - 1, at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn push_front_is_rotate_right_and_overwrite(mut items in proptest::collection::vec(any::<u16>(), 0..60), newest in any::<u16>()) {
            let mut want = items.clone();
            if !want.is_empty() {
                want.rotate_right(1);
            }
            if let Some(first) = want.first_mut() {
                *first = newest;
            }
            push_front(&mut items, newest);
            prop_assert_eq!(items, want);
        }

        #[test]
        fn move_last_to_is_insert(mut items in proptest::collection::vec(any::<u16>(), 1..60), index in 0usize..70) {
            let mut want = items.clone();
            let last = want.pop().unwrap();
            if index <= want.len() {
                want.insert(index, last);
            } else {
                want.push(last);
            }
            move_last_to(&mut items, index);
            prop_assert_eq!(items, want);
        }
    }
}
