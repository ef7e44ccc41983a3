/*
 * SPDX-License-Identifier: Apache-2.0
 * Copyright (c) 2026 The OpenBMS authors
 *
 * PROT-1 (rev 2), DFU-1: the core's output state in retained RAM, so that after a warm restart
 * (a firmware update's reboot, a watchdog reset) the first step drives the outputs again
 * instead of waiting for battery data. The RAM is the devicetree's chosen
 * `openbms,retained-outputs`: a `zephyr,retention` area in a `zephyr,memory-region` that
 * neither MCUboot nor the application uses (boards/nrf52840dk_nrf52840.overlay,
 * app/sysbuild/mcuboot.overlay). Whether the state is intact, safe and recent enough is the
 * core's (rust/bms-core/src/retained.rs); this file moves the bytes and says whether the reset
 * was warm. Boards without the chosen node (native_sim) start cold every time.
 */

#include <zephyr/device.h>
#include <zephyr/devicetree.h>
#include <zephyr/drivers/hwinfo.h>
#include <zephyr/logging/log.h>
#include <zephyr/retention/retention.h>

#include "app.h"

LOG_MODULE_REGISTER(bms_retained, CONFIG_BMS_LOG_LEVEL);

#if DT_HAS_CHOSEN(openbms_retained_outputs)

static const struct device *const area = DEVICE_DT_GET(DT_CHOSEN(openbms_retained_outputs));

BUILD_ASSERT(DT_REG_SIZE(DT_CHOSEN(openbms_retained_outputs)) >= BMS_RETAINED_LEN + 8,
	     "openbms,retained-outputs holds the core's record, prefix and checksum");

void retained_restore(void)
{
	uint8_t bytes[BMS_RETAINED_LEN];
	uint32_t cause = 0;
	int32_t rc;
	int err;

	err = hwinfo_get_reset_cause(&cause);
	(void)hwinfo_clear_reset_cause();
	if (!device_is_ready(area) || retention_is_valid(area) != 1) {
		LOG_INF("No retained output state: outputs wait for battery data");
		return;
	}
	/* Warm: a software reset (sys_reboot after an update, an init failure) or a watchdog
	 * reset. Power-on, brown-out and the reset pin start cold (PROT-1).
	 */
	if (err || !(cause & (RESET_SOFTWARE | RESET_WATCHDOG)) ||
	    (cause & (RESET_POR | RESET_BROWNOUT | RESET_PIN))) {
		LOG_INF("Cold start (reset cause 0x%08x): outputs wait for battery data", cause);
		(void)retention_clear(area);
		return;
	}
	err = retention_read(area, 0, bytes, sizeof(bytes));
	(void)retention_clear(area);
	if (err) {
		LOG_ERR("Retained output state not read (err %d)", err);
		return;
	}
	/* The state is written at every step and the watchdog resets within its period of the
	 * last one: that period bounds how long before the reset the state was written.
	 */
	rc = bms_set_warm_restart(bytes, sizeof(bytes), CONFIG_BMS_CONTROL_WDT_MS);
	if (rc) {
		LOG_WRN("Retained output state refused (err %d): cold start", rc);
	}
}

void retained_save(struct bms *bms)
{
	uint8_t bytes[BMS_RETAINED_LEN];
	size_t len = 0;
	int err;

	if (bms_retained(bms, bytes, sizeof(bytes), &len) != BMS_OK) {
		return;
	}
	err = retention_write(area, 0, bytes, len);
	if (err) {
		LOG_ERR("Retained output state not written (err %d)", err);
	}
}

#else /* no retained RAM on this board */

void retained_restore(void)
{
	LOG_INF("No retained RAM on this board: every start is cold (PROT-1)");
}

void retained_save(struct bms *bms)
{
	ARG_UNUSED(bms);
}

#endif
