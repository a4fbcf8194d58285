//! Quiet hours: heavy work runs only inside a local-time window.

/// A daily window in minutes after local midnight; `start > end` wraps past
/// midnight ("23:00"–"07:00").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietHours {
    pub start_min: u32,
    pub end_min: u32,
}

impl QuietHours {
    /// Parses "HH:MM" pairs; two empty strings mean no quiet hours.
    pub fn parse(start: &str, end: &str) -> Result<Option<QuietHours>, String> {
        match (start.trim(), end.trim()) {
            ("", "") => Ok(None),
            ("", _) | (_, "") => {
                Err("set both quiet-hours-start and quiet-hours-end, or neither".into())
            }
            (s, e) => {
                let q = QuietHours {
                    start_min: hhmm(s)?,
                    end_min: hhmm(e)?,
                };
                if q.start_min == q.end_min {
                    return Err("quiet-hours-start and quiet-hours-end must differ".into());
                }
                Ok(Some(q))
            }
        }
    }

    /// Whether heavy work may run at `minute_of_day` (local time).
    pub fn allows_heavy_work(&self, minute_of_day: u32) -> bool {
        if self.start_min < self.end_min {
            (self.start_min..self.end_min).contains(&minute_of_day)
        } else {
            minute_of_day >= self.start_min || minute_of_day < self.end_min
        }
    }
}

fn hhmm(s: &str) -> Result<u32, String> {
    let bad = || format!("`{s}` is not a time of day like \"23:00\"");
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if h > 23 || m > 59 || s.len() != 5 {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_wrap_midnight() {
        let night = QuietHours::parse("23:00", "07:00").unwrap().unwrap();
        assert!(night.allows_heavy_work(23 * 60));
        assert!(night.allows_heavy_work(3 * 60));
        assert!(!night.allows_heavy_work(7 * 60));
        assert!(!night.allows_heavy_work(12 * 60));
        let day = QuietHours::parse("09:30", "17:00").unwrap().unwrap();
        assert!(day.allows_heavy_work(9 * 60 + 30));
        assert!(!day.allows_heavy_work(9 * 60 + 29));
        assert!(!day.allows_heavy_work(17 * 60));
    }

    #[test]
    fn parse_errors() {
        assert_eq!(QuietHours::parse("", "").unwrap(), None);
        for (s, e) in [
            ("7:00", "08:00"),
            ("24:00", "01:00"),
            ("10:00", ""),
            ("10:00", "10:00"),
            ("ab:cd", "01:00"),
        ] {
            assert!(QuietHours::parse(s, e).is_err(), "{s}-{e}");
        }
    }
}
