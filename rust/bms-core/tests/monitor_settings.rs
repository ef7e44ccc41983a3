//! Settings validation and factory reset (SET-1, SET-4, MON-3), through the public API.

use bms_core::settings::{Settings, SettingsError, SettingsField};

fn custom() -> Settings {
    Settings {
        charged_cell_mv: 3_550,
        tail_current_permille: 20,
        charged_detection_min: 10,
        low_soc_warning_pct: 40,
        discharge_floor_pct: 30,
        prealarm_cell_mv: 2_900,
    }
}

/// MON-3: the factory defaults.
#[test]
fn mon_3_defaults() {
    let defaults = Settings::default();
    assert_eq!(
        defaults,
        Settings {
            charged_cell_mv: 3_500,
            tail_current_permille: 40,
            charged_detection_min: 3,
            low_soc_warning_pct: 20,
            discharge_floor_pct: 10,
            prealarm_cell_mv: 3_100,
        }
    );
    assert_eq!(defaults.validate(), Ok(()));
}

/// SET-1: every value out of range is refused with an error naming the field, and a refused
/// write changes nothing; the range ends themselves are accepted.
#[test]
fn set_1_out_of_range_is_refused_naming_the_field() {
    let cases: [(SettingsField, u16, u16); 6] = [
        (SettingsField::ChargedVoltage, 3_350, 3_650),
        (SettingsField::TailCurrent, 5, 100),
        (SettingsField::ChargedDetectionTime, 1, 100),
        (SettingsField::LowSocWarningLevel, 0, 99),
        (SettingsField::DischargeFloor, 0, 99),
        (SettingsField::PrealarmLevel, 2_850, 3_150),
    ];
    for (field, min, max) in cases {
        // Floor 0 and warning 0 so the cross-rule stays out of the way.
        let base = Settings {
            low_soc_warning_pct: 0,
            discharge_floor_pct: 0,
            ..Settings::default()
        };
        assert_eq!(base.with(field, min).validate(), Ok(()), "{field} min");
        assert_eq!(base.with(field, max).validate(), Ok(()), "{field} max");
        for bad in [min.wrapping_sub(1), max + 1, u16::MAX] {
            if bad > max || bad < min {
                let mut settings = custom();
                let err = settings.write(base.with(field, bad)).unwrap_err();
                assert_eq!(err.field(), field);
                assert!(matches!(err, SettingsError::OutOfRange { .. }), "{err:?}");
                assert_eq!(settings, custom(), "a refused write changes nothing");
            }
        }
    }
}

/// SET-1: the warning level, when set, must be above the discharge floor; either may be off.
#[test]
fn set_1_warning_must_be_above_floor() {
    let mut settings = custom();
    let refused = Settings {
        low_soc_warning_pct: 30,
        discharge_floor_pct: 30,
        ..custom()
    };
    let err = settings.write(refused).unwrap_err();
    assert_eq!(
        err,
        SettingsError::WarningNotAboveFloor {
            warning_pct: 30,
            floor_pct: 30
        }
    );
    assert_eq!(err.field(), SettingsField::LowSocWarningLevel);
    assert_eq!(
        err.to_string(),
        "low-soc warning level 30 % must be above the discharge floor 30 %"
    );
    assert_eq!(settings, custom());
    for (warning, floor) in [(31, 30), (0, 30), (5, 0), (0, 0)] {
        let ok = Settings {
            low_soc_warning_pct: warning,
            discharge_floor_pct: floor,
            ..custom()
        };
        assert_eq!(settings.write(ok), Ok(()), "{warning} / {floor}");
        assert_eq!(settings, ok);
    }
}

/// SET-1: errors read as plain lowercase sentences naming the field.
#[test]
fn set_1_error_messages_name_the_field() {
    let err = Settings::default()
        .with(SettingsField::TailCurrent, 101)
        .validate()
        .unwrap_err();
    assert_eq!(err.to_string(), "tail current 101 out of range 5..=100");
    let err = Settings::default()
        .with(SettingsField::ChargedDetectionTime, 300)
        .validate()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "charged detection time 255 out of range 1..=100"
    );
}

/// SET-1: field numbers on the wire are stable and round-trip.
#[test]
fn set_1_field_numbers_round_trip() {
    for (number, field) in SettingsField::ALL.iter().enumerate() {
        assert_eq!(*field as u8, number as u8);
        assert_eq!(SettingsField::from_u8(number as u8), Some(*field));
        assert_eq!(Settings::default().with(*field, 42).get(*field), 42);
    }
    assert_eq!(SettingsField::from_u8(6), None);
}

/// SET-4: factory reset restores exactly charged voltage, tail current, charged detection time,
/// low-SoC warning level and discharge floor; the pre-alarm level (not in SET-4's list) stays.
#[test]
fn set_4_factory_reset_restores_exactly_the_listed_settings() {
    let mut settings = custom();
    settings.factory_reset();
    let defaults = Settings::default();
    assert_eq!(settings.charged_cell_mv, defaults.charged_cell_mv);
    assert_eq!(
        settings.tail_current_permille,
        defaults.tail_current_permille
    );
    assert_eq!(
        settings.charged_detection_min,
        defaults.charged_detection_min
    );
    assert_eq!(settings.low_soc_warning_pct, defaults.low_soc_warning_pct);
    assert_eq!(settings.discharge_floor_pct, defaults.discharge_floor_pct);
    assert_eq!(settings.prealarm_cell_mv, 2_900, "pre-alarm level kept");
    assert_eq!(settings.validate(), Ok(()));
    for field in SettingsField::ALL {
        let reset = settings.get(field) == defaults.get(field);
        assert_eq!(reset, field.restored_by_factory_reset(), "{field}");
    }
}

/// SET-1: settings survive a serde round trip exactly.
#[test]
fn set_1_settings_round_trip() {
    let mut buf = [0u8; 32];
    let bytes = postcard::to_slice(&custom(), &mut buf).unwrap();
    assert_eq!(postcard::from_bytes::<Settings>(bytes).unwrap(), custom());
}

/// SET-1: a refused value is named as written: 300 minutes, not the 255 a byte field holds;
/// nothing changes.
#[test]
fn set_1_refused_value_is_named_as_written() {
    let settings = Settings::default();
    let e = settings
        .try_with(SettingsField::ChargedDetectionTime, 300)
        .unwrap_err();
    assert_eq!(
        e,
        SettingsError::OutOfRange {
            field: SettingsField::ChargedDetectionTime,
            value: 300,
            min: 1,
            max: 100
        }
    );
    assert!(e.to_string().contains("300"), "{e}");
    for field in SettingsField::ALL {
        let max = field.bounds().max;
        let e = settings.try_with(field, 1000.max(max + 1)).unwrap_err();
        assert!(
            e.to_string().contains(&1000.max(max + 1).to_string()),
            "{e}"
        );
    }
    let ok = settings
        .try_with(SettingsField::ChargedDetectionTime, 100)
        .unwrap();
    assert_eq!(ok.charged_detection_min, 100);
}
