//! What the batteries measure and send: each battery's report built from the plant's true
//! values with its sensor errors (current gain and offset, noise, voltage quantisation).

use crate::ocv::Ocv;
use crate::plant::Battery;
use crate::scenario::SensorConfig;
use bms_core::bus::{BatteryFlags, BatteryReport};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// Firmware version the simulated batteries report (v1.18).
pub const BATTERY_FIRMWARE: u16 = 0x0112;

/// The fixed errors of one battery's sensors, drawn once.
#[derive(Clone, Copy, Debug)]
pub struct BatterySensor {
    /// Current gain: reading = true × gain + offset + noise.
    pub current_gain: f64,
    /// Current offset, amperes.
    pub current_offset_a: f64,
}

impl BatterySensor {
    /// Draws the gain and offset errors uniformly within the configured bounds.
    pub fn draw(config: &SensorConfig, rng: &mut ChaCha8Rng) -> Self {
        let g = config.current_gain_error_pct / 100.0;
        let o = config.current_offset_a;
        BatterySensor {
            current_gain: 1.0 + if g > 0.0 { rng.gen_range(-g..=g) } else { 0.0 },
            current_offset_a: if o > 0.0 { rng.gen_range(-o..=o) } else { 0.0 },
        }
    }

    /// The report `battery` sends now.
    pub fn report(
        &self,
        battery: &Battery,
        ocv: &Ocv,
        config: &SensorConfig,
        rng: &mut ChaCha8Rng,
    ) -> BatteryReport {
        let mut noise = |sd: f64| -> f64 {
            if sd > 0.0 {
                let z: f64 = StandardNormal.sample(&mut *rng);
                z * sd
            } else {
                0.0
            }
        };
        let step = f64::from(config.cell_resolution_mv);
        let mut cells_mv = heapless::Vec::new();
        for v in battery.cell_voltages(ocv) {
            let mv = v * 1000.0 + noise(config.cell_noise_mv);
            let q = (mv / step).round() * step;
            // A full vector cannot happen: the model fixes the cell count at most 16.
            let _ = cells_mv.push(q.clamp(0.0, f64::from(u16::MAX)) as u16);
        }
        let mut temps_ddegc = heapless::Vec::new();
        let t = battery.temp_c + noise(config.temp_noise_c);
        let _ = temps_ddegc.push((t * 10.0).round().clamp(-2000.0, 2000.0) as i16);
        let current_a = battery.current_a * self.current_gain
            + self.current_offset_a
            + noise(config.current_noise_a);
        BatteryReport {
            serial: battery.serial,
            model: battery.model,
            capacity_dah: (battery.nominal_ah * 10.0)
                .round()
                .clamp(0.0, f64::from(u16::MAX)) as u16,
            firmware: BATTERY_FIRMWARE,
            cells_mv,
            temps_ddegc,
            current_ma: (current_a * 1000.0)
                .round()
                .clamp(f64::from(i32::MIN), f64::from(i32::MAX)) as i32,
            flags: BatteryFlags {
                allowed_to_charge: battery.allowed_to_charge,
                allowed_to_discharge: battery.allowed_to_discharge,
                balancing: battery.balancing,
            },
        }
    }
}

/// The BMS's own measurement of the bank voltage (its supply), mV.
pub fn supply_mv(bank_v: f64, gain: f64, config: &SensorConfig) -> u32 {
    let step = f64::from(config.supply_resolution_mv);
    ((bank_v * gain * 1000.0 / step).round() * step).clamp(0.0, f64::from(u32::MAX)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plant::{Bank, BankSpec, Spread};
    use bms_core::bus::BatteryModel;
    use rand::SeedableRng;

    #[test]
    fn report_quantises_cells_and_applies_current_errors() {
        let spec = BankSpec {
            model: BatteryModel::Lfp12V8,
            capacity_ah: 100.0,
            series: 1,
            parallel: 1,
            initial_soc_pct: 50.0,
            initial_temp_c: 25.0,
            spread: Spread {
                capacity_pct: 0.0,
                resistance_pct: 0.0,
                soc_pct: 0.0,
                self_discharge_pct_per_month: 0.0,
            },
        };
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut bank = Bank::new(&spec, &mut rng);
        bank.batteries[0].current_a = -10.0;
        let config = SensorConfig {
            current_noise_a: 0.0,
            cell_noise_mv: 0.0,
            cell_resolution_mv: 5,
            temp_noise_c: 0.0,
            ..SensorConfig::default()
        };
        let sensor = BatterySensor {
            current_gain: 1.01,
            current_offset_a: 0.05,
        };
        let r = sensor.report(&bank.batteries[0], &bank.ocv, &config, &mut rng);
        assert_eq!(r.cells_mv.len(), 4);
        assert!(r.cells_mv.iter().all(|mv| mv % 5 == 0));
        assert_eq!(r.current_ma, -10_050);
        assert_eq!(r.temps_ddegc[0], 250);
        assert_eq!(r.capacity_dah, 1000);
        assert_eq!(supply_mv(13.2345, 1.0, &config), 13_230);
    }
}
