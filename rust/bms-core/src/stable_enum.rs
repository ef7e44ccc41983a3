//! [`stable_enum!`]: one declaration for each enum whose numbers are wire-stable (sent over BLE,
//! stored on flash, passed through the C interface): the variants with their numbers and short
//! names, and from them `ALL`, `COUNT`, `name`, `from_u8` and `index`. A number used twice is a
//! compile error (rustc refuses a discriminant assigned twice).
//!
//! ```ignore
//! stable_enum! {
//!     /// Doc of the enum.
//!     #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
//!     pub enum Fruit {
//!         /// Doc of the variant.
//!         Apple = 1 => "apple",
//!         Pear = 2 => "pear",
//!     }
//! }
//! assert_eq!(Fruit::from_u8(2), Some(Fruit::Pear));
//! ```

/// Declares a `#[repr(u8)]` enum with stable numbers and names; see the module documentation.
/// `ALL` lists the variants in declaration order, which is also the order of `index`.
macro_rules! stable_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $(
                $(#[$vmeta:meta])*
                $variant:ident = $number:literal => $text:literal
            ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[repr(u8)]
        $vis enum $name {
            $(
                $(#[$vmeta])*
                $variant = $number,
            )+
        }

        impl $name {
            /// How many there are.
            pub const COUNT: usize = [$($name::$variant),+].len();

            /// Every one, in declaration order.
            pub const ALL: [$name; $name::COUNT] = [$($name::$variant),+];

            /// Short name for logs, CSV columns and error messages.
            pub const fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            /// The one with this stable number, `None` when the number is unknown.
            pub const fn from_u8(number: u8) -> Option<$name> {
                match number {
                    $($number => Some($name::$variant),)+
                    _ => None,
                }
            }

            /// Position in [`Self::ALL`] (for tables with one slot each).
            pub const fn index(self) -> usize {
                let mut rest: &[$name] = &$name::ALL;
                let mut i = 0;
                while let [first, tail @ ..] = rest {
                    if *first as u8 == self as u8 {
                        return i;
                    }
                    i += 1;
                    rest = tail;
                }
                i
            }
        }

    };
}

pub(crate) use stable_enum;
