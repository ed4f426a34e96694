//! Routing by unit id, with unit-id rewriting.

use core::ops::RangeInclusive;

/// Where requests for a unit go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Upstream number `n` (the driver's index).
    Upstream(usize),
    /// The gateway's own local device ([`crate::Storage`] behind an engine).
    Local,
}

/// One routing rule: units `units` go to `target`, optionally renumbered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Client-side unit ids this rule takes.
    pub units: RangeInclusive<u8>,
    /// Where they go.
    pub target: Target,
    /// `Some(base)`: the first unit of `units` becomes `base` upstream, the
    /// others follow in order. `None`: unit ids pass unchanged.
    pub rewrite_base: Option<u8>,
}

/// Why a set of routes was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// Two rules claim the same unit.
    #[error("unit {0} is routed twice")]
    Overlap(u8),
    /// A range ends before it starts.
    #[error("empty unit range {0}-{1}")]
    Empty(u8, u8),
    /// Rewriting would carry a unit past 255.
    #[error("rewrite of {start}-{end} to base {base} goes past unit 255")]
    RewriteOverflow {
        /// First unit of the range.
        start: u8,
        /// Last unit of the range.
        end: u8,
        /// The rewrite base.
        base: u8,
    },
    /// A route string did not parse.
    #[error("bad unit range {0:?} (expected N, N-M or N-M@BASE)")]
    Syntax(String),
}

/// Unit id → target table: one lookup per request, no allocation.
#[derive(Debug, Clone)]
pub struct Router {
    table: [Option<(Target, u8)>; 256],
    fallback: Option<Target>,
}

impl Router {
    /// A router from `routes`; units no rule names go to `fallback` (if any) unchanged.
    pub fn new(routes: &[Route], fallback: Option<Target>) -> Result<Self, RouteError> {
        let mut table = [None; 256];
        for r in routes {
            let (start, end) = (*r.units.start(), *r.units.end());
            if start > end {
                return Err(RouteError::Empty(start, end));
            }
            if let Some(base) = r.rewrite_base
                && usize::from(base) + usize::from(end - start) > 255
            {
                return Err(RouteError::RewriteOverflow { start, end, base });
            }
            for unit in start..=end {
                let slot = &mut table[usize::from(unit)];
                if slot.is_some() {
                    return Err(RouteError::Overlap(unit));
                }
                // ok: checked above that base + (end - start) <= 255.
                let upstream_unit = r.rewrite_base.map_or(unit, |b| b + (unit - start));
                *slot = Some((r.target, upstream_unit));
            }
        }
        Ok(Self { table, fallback })
    }

    /// Where `unit` goes and the unit id to use there; `None`: no route.
    #[inline]
    pub fn resolve(&self, unit: u8) -> Option<(Target, u8)> {
        self.table[usize::from(unit)].or_else(|| self.fallback.map(|t| (t, unit)))
    }
}

/// Parses `N`, `N-M` or `N-M@BASE` into a unit range and a rewrite base.
pub fn parse_units(s: &str) -> Result<(RangeInclusive<u8>, Option<u8>), RouteError> {
    let bad = || RouteError::Syntax(s.to_owned());
    let (range, base) = match s.split_once('@') {
        Some((r, b)) => (r, Some(b.trim().parse::<u8>().map_err(|_| bad())?)),
        None => (s, None),
    };
    let (a, b) = range.split_once('-').unwrap_or((range, range));
    let a = a.trim().parse::<u8>().map_err(|_| bad())?;
    let b = b.trim().parse::<u8>().map_err(|_| bad())?;
    Ok((a..=b, base))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_rewrite_and_fallback() {
        let routes = [
            Route {
                units: 1..=10,
                target: Target::Upstream(0),
                rewrite_base: None,
            },
            Route {
                units: 11..=20,
                target: Target::Upstream(1),
                rewrite_base: Some(1),
            },
            Route {
                units: 99..=99,
                target: Target::Local,
                rewrite_base: None,
            },
        ];
        let r = Router::new(&routes, None).unwrap();
        assert_eq!(r.resolve(5), Some((Target::Upstream(0), 5)));
        assert_eq!(r.resolve(11), Some((Target::Upstream(1), 1)));
        assert_eq!(r.resolve(20), Some((Target::Upstream(1), 10)));
        assert_eq!(r.resolve(99), Some((Target::Local, 99)));
        assert_eq!(r.resolve(50), None);
        let r = Router::new(&routes, Some(Target::Upstream(0))).unwrap();
        assert_eq!(r.resolve(50), Some((Target::Upstream(0), 50)));
    }

    #[test]
    fn bad_routes_refused() {
        let one = |units, base| Route {
            units,
            target: Target::Local,
            rewrite_base: base,
        };
        assert_eq!(
            Router::new(&[one(1..=5, None), one(5..=6, None)], None).unwrap_err(),
            RouteError::Overlap(5)
        );
        assert!(matches!(
            Router::new(&[one(250..=255, Some(251))], None),
            Err(RouteError::RewriteOverflow { .. })
        ));
        assert_eq!(parse_units("3-7@1").unwrap(), (3..=7, Some(1)));
        assert_eq!(parse_units("9").unwrap(), (9..=9, None));
        assert!(parse_units("1-300").is_err());
        assert!(parse_units("x").is_err());
    }
}
