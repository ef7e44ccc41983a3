//! The readings that correct the count: a knee of the rested cell voltage, the float offset,
//! and the cell voltage under a light load; each a measurement update of the filter, gated by
//! how much the cells can honestly say at that moment.

use super::*;

impl AdaptiveEstimator {
    /// Every completed 5-minute rest bucket: knee and float readings when their gates open.
    pub(super) fn rested_bucket(&mut self) {
        if !self.rest.knee_done && self.rest.rest_ms >= self.knee_rest_ms() {
            if let Some(cell_mv) = self.rest.flat_mv(4) {
                if self.knee_reading(cell_mv) {
                    self.rest.knee_done = true;
                }
            }
        }
        let float_due = self
            .rest
            .since_float_ms
            .is_none_or(|since| since >= FLOAT_INTERVAL_MS);
        if float_due && self.rest.rest_ms >= FLOAT_REST_MS {
            if let Some(cell_mv) = self.rest.flat_mv(BUCKETS) {
                if (FLOAT_MIN_CELL_MV..=FLOAT_MAX_CELL_MV).contains(&cell_mv) {
                    let sigma = FLOAT_SIGMA_C * self.capacity_mah as f32;
                    self.measure(unit(B), self.rest.mean_ma(), sigma * sigma);
                    self.rest.since_float_ms = Some(0);
                    self.stats.float_readings = self.stats.float_readings.saturating_add(1);
                }
            }
        }
    }

    /// A relaxed cell voltage: corrects the SoC when it lies on a knee. True when applied.
    pub(super) fn knee_reading(&mut self, cell_mv: f32) -> bool {
        let applied = self.voltage_reading(cell_mv, 0.0);
        if applied {
            self.stats.knee_readings = self.stats.knee_readings.saturating_add(1);
            // The loaded readings' spacing counts from any voltage reading: their errors are
            // correlated with this one's.
            self.light.since_reading_ms = Some(0);
        }
        applied
    }

    /// A cell voltage taken as open-circuit voltage with `extra_var_mv` (mV²) of model error
    /// beyond a rested reading's: corrects the SoC when it lies on a knee. True when applied.
    pub(super) fn voltage_reading(&mut self, cell_mv: f32, extra_var_mv: f32) -> bool {
        // The table is the discharge branch: move the reading there.
        let on_discharge_mv = cell_mv - (self.hysteresis + 1.0) * self.half_gap_mv();
        let (soc, slope_mv) = ocv_soc(on_discharge_mv);
        if slope_mv / 100.0 < KNEE_MIN_SLOPE_MV_PER_PCT {
            return false;
        }
        let Some(region) = bias_state(soc) else {
            return false;
        };
        // Under load only the lower region: near full, a battery fresh off its charger still
        // relaxes for hours, and the plateau's end is a few mV from the knee.
        let loaded = extra_var_mv > 0.0;
        if loaded && region == HIGH {
            return false;
        }
        let var_mv = READING_SIGMA_MV * READING_SIGMA_MV
            + HYSTERESIS_SIGMA_MV * HYSTERESIS_SIGMA_MV
            + extra_var_mv;
        let extra = if region == HIGH {
            HIGH_READING_SIGMA
        } else {
            LOW_READING_SIGMA
        };
        let r = var_mv / (slope_mv * slope_mv) + extra * extra;
        let deep_reach = if self.bias_learned(&unit(LOW + 1)) {
            DEEP_REACH_LEARNED
        } else {
            DEEP_REACH_UNLEARNED
        };
        let biases = bias_weights(soc, region, deep_reach);
        let mut h = biases;
        h[S] = 1.0;
        let mut mask = [true; N];
        // The lower region, warm, teaches the capacity (the charge counted from full down to
        // it); near full the count since full is too small to say anything about it.
        mask[CAP] = region != HIGH && self.temp_ddegc >= CAPACITY_MIN_TEMP_DDEGC;
        if !self.bias_learned(&biases) {
            // Not learned yet: teach the table biases only.
            mask[S] = false;
            mask[B] = false;
            mask[E] = false;
            mask[CAP] = false;
        }
        if loaded {
            // A loaded reading far from what the filter expects is the model's failure (a
            // relaxation not modelled), not news about the SoC: it teaches nothing.
            let mut state = self.x;
            state[S] = self.soc();
            let expected = dot(&h, &state);
            let total = dot(&h, &self.p.map(|row| dot(&row, &h))) + r;
            if (soc - expected) * (soc - expected) > OUTLIER_SIGMAS * OUTLIER_SIGMAS * total {
                self.last_nis = OUTLIER_SIGMAS * OUTLIER_SIGMAS;
                self.last_innovation = soc - expected;
                self.judge_consistency();
                return false;
            }
        }
        if self.disagree {
            // Counting plainly: readings teach the table only, and say when model and data
            // agree again.
            mask[S] = false;
            mask[B] = false;
            mask[E] = false;
            mask[CAP] = false;
        }
        let capacity_taught = self.update(h, soc, r, mask);
        if capacity_taught {
            self.stats.capacity_readings = self.stats.capacity_readings.saturating_add(1);
        }
        self.judge_consistency();
        true
    }

    /// Folds the last reading's normalised innovation into the running average and switches
    /// between the model and the plain count when they part or meet again.
    pub(super) fn judge_consistency(&mut self) {
        self.nis += (self.last_nis.min(100.0) - self.nis) * NIS_WEIGHT;
        if !self.disagree && self.nis > DISAGREE_NIS {
            self.disagree = true;
            self.stats.fallbacks = self.stats.fallbacks.saturating_add(1);
            // Fall back to the plain count. The gap between the two counts is uncertainty
            // now, and the reported σ also covers the disagreement itself: the voltage may be
            // right (a cell that is not the table's, a capacity far from the setting) or the
            // count.
            let gap = (self.plain.used_nas() - self.used_nas) as f32 / self.capacity_nas();
            let apart = self.last_innovation;
            self.used_nas = self.plain.used_nas();
            self.clipped_nas = 0;
            self.p[S][S] += gap * gap;
            self.disagreement = apart.abs().min(1.0);
            log::warn!(
                "soc: voltage and count disagree by {} permille, counting plainly (gap {} permille)",
                Number::from((apart * 1000.0) as i32),
                Number::from((gap * 1000.0) as i32)
            );
        } else if self.disagree && self.nis < AGREE_NIS {
            self.disagree = false;
            self.disagreement = 0.0;
            log::info!("soc: voltage and count agree again");
        }
    }

    /// Light-load readings: models the drop of the cell voltage under the present current
    /// (series resistance at once, polarisation with its time constant) and fills the
    /// 5-minute buckets of the corrected voltage while the load is light.
    pub(super) fn watch_light_load(&mut self, interval: &Interval, mean_ma: f32) {
        let current_a = (mean_ma - self.x[B]) / 1000.0;
        let scale = self.resistance_scale();
        let dt_ms = interval.dt_ms as f32;
        let settle = (dt_ms / POLARISATION_TAU_MS).min(1.0);
        self.polarisation_mv +=
            (POLARISATION_MOHM_AH * scale * current_a - self.polarisation_mv) * settle;
        let drop_mv = SERIES_RESISTANCE_MOHM_AH * scale * current_a + self.polarisation_mv;
        let light_ma = LIGHT_LOAD_C * self.capacity_mah as f32;
        let rest_ma = REST_CURRENT_C * self.capacity_mah as f32;
        let end_ma = interval.end_ma as f32 - self.x[B];
        // Discharging lightly or resting (a rest that is not flat, e.g. a small load in the
        // deep knee, is read here too); a charge is never light.
        let light_range = -light_ma..=rest_ma;
        let light = light_range.contains(&(current_a * 1000.0)) && light_range.contains(&end_ma);
        if let Some(since) = self.light.since_reading_ms.as_mut() {
            *since = since.saturating_add(u64::from(interval.dt_ms));
        }
        if !light || interval.cells_in_series == 0 {
            let since = self.light.since_reading_ms;
            self.light = LightWatch {
                since_reading_ms: since,
                ..LightWatch::default()
            };
            return;
        }
        let cell_mv = interval.bank_mv as f32 / f32::from(interval.cells_in_series);
        let w = &mut self.light;
        w.light_ms = w.light_ms.saturating_add(u64::from(interval.dt_ms));
        w.bucket_ms = w.bucket_ms.saturating_add(interval.dt_ms);
        w.bucket_mv_ms += cell_mv * dt_ms;
        w.bucket_drop_ms += drop_mv * dt_ms;
        if w.bucket_ms >= BUCKET_MS {
            let n = w.bucket_ms as f32;
            let (mv, drop) = (w.bucket_mv_ms / n, w.bucket_drop_ms / n);
            w.bucket_ms = 0;
            w.bucket_mv_ms = 0.0;
            w.bucket_drop_ms = 0.0;
            self.light_bucket(mv, drop);
        }
    }

    /// Every completed 5-minute light-load bucket: a loaded reading when its gates open.
    pub(super) fn light_bucket(&mut self, cell_mv: f32, drop_mv: f32) {
        let due = self
            .light
            .since_reading_ms
            .is_none_or(|since| since >= LOADED_INTERVAL_MS);
        if !due || self.light.light_ms < LOADED_SETTLE_MS {
            return;
        }
        // A rest with a flat voltage is the rested path's (no drop to model).
        if self.rest.rest_ms > 0 && self.rest.flat_mv(4).is_some() {
            return;
        }
        let sigma_mv = LOADED_DROP_SIGMA * drop_mv.abs() + LOADED_SIGMA_MV;
        if self.voltage_reading(cell_mv - drop_mv, sigma_mv * sigma_mv) {
            self.light.since_reading_ms = Some(0);
            self.stats.loaded_readings = self.stats.loaded_readings.saturating_add(1);
        }
    }

    /// Whether the table bias a reading sees through `biases` counts as learned: its variance
    /// given the capacity within [`BIAS_LEARNED_SIGMA`].
    fn bias_learned(&self, biases: &Vector) -> bool {
        self.bias_variance_given_capacity(biases) <= BIAS_LEARNED_SIGMA * BIAS_LEARNED_SIGMA
    }

    /// Variance of the table bias of `region` if the capacity were known: what a reading
    /// there can still not tell apart from the SoC. The part of the bias's uncertainty that
    /// moves with the capacity's (a bias learned from a count that a capacity error scales)
    /// is resolved by the update itself, which carries the correlation.
    pub(super) fn bias_variance_given_capacity(&self, biases: &Vector) -> f32 {
        let pb = self.p.map(|row| dot(&row, biases));
        let p_bb = dot(biases, &pb);
        let p_cc = variance(&self.p, CAP);
        let p_bc = pb[CAP];
        // A covariance that rounding made inconsistent (|correlation| > 1) explains nothing.
        let consistent = p_cc > 0.0 && p_bc * p_bc <= p_bb * p_cc;
        let explained = if consistent { p_bc * p_bc / p_cc } else { 0.0 };
        p_bb - explained
    }

    /// Resistances scale with the inverse capacity and double every
    /// [`RESISTANCE_DOUBLING_DEGC`] below 25 °C.
    pub(super) fn resistance_scale(&self) -> f32 {
        let below = ((250.0 - f32::from(self.temp_ddegc)) / 10.0).clamp(0.0, 36.0);
        let cold = exp2(below / RESISTANCE_DOUBLING_DEGC).min(8.0);
        cold * 1000.0 / self.capacity_mah.max(1) as f32
    }
}
