//! The LiFePO4 open-circuit-voltage table, once: the MON-7 estimate reads it in permille, the
//! adaptive estimator as a fraction with the table's slope.

/// Rested cell voltage (mV) for SoC 0, 5, ... 100 %, discharge branch, 25 °C: LibreSolar
/// `ocv_lfp`.
const OCV_CELL_MV: [u16; 21] = [
    2833, 3132, 3177, 3190, 3213, 3226, 3240, 3252, 3262, 3264, 3265, 3268, 3271, 3275, 3283, 3296,
    3304, 3308, 3309, 3314, 3392,
];
/// SoC step between two table entries, as a fraction.
const OCV_STEP: f32 = 0.05;

/// SoC in permille from a rested cell voltage, by linear interpolation in the LiFePO4 OCV table
/// (MON-7). Below the table gives 0, above gives 1000.
pub fn ocv_soc_permille(cell_mv: u16) -> u16 {
    let mut lower_mv = 0u16;
    let mut lower_permille = 0u16;
    for (step, &upper_mv) in (0u16..).zip(OCV_CELL_MV.iter()) {
        let upper_permille = step * 50;
        if cell_mv <= upper_mv {
            if step == 0 {
                return 0;
            }
            let span_mv = u32::from(upper_mv - lower_mv).max(1);
            let into = u32::from(cell_mv - lower_mv);
            return lower_permille + (into * 50 / span_mv) as u16;
        }
        lower_mv = upper_mv;
        lower_permille = upper_permille;
    }
    1000
}

/// SoC (fraction) for a rested discharge-branch cell voltage by the OCV table, and the table's
/// slope there in mV per unit SoC. Outside the table: 0 or 1, with the end segment's slope.
pub fn ocv_soc(cell_mv: f32) -> (f32, f32) {
    let mut lower = f32::from(OCV_CELL_MV[0]);
    let mut lower_soc = 0.0;
    for (step, &upper) in OCV_CELL_MV.iter().enumerate().skip(1) {
        let upper = f32::from(upper);
        let slope = (upper - lower) / OCV_STEP;
        if cell_mv <= upper || step == OCV_CELL_MV.len() - 1 {
            let soc = (lower_soc + (cell_mv - lower) / slope.max(1.0)).clamp(0.0, 1.0);
            return (soc, slope);
        }
        lower = upper;
        lower_soc += OCV_STEP;
    }
    (1.0, 0.0)
}
