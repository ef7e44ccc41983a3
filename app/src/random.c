/*
 * SPDX-License-Identifier: Apache-2.0
 * Copyright (c) 2026 The OpenBMS authors
 *
 * bms_port_random(): the core's secrets (the Instant Readout key, and the first advertisement
 * nonce after a lost nonce record) come from Zephyr's cryptographically secure generator,
 * which is the board's entropy device (nRF52840: the RNG peripheral).
 */

#include <errno.h>

#include <zephyr/logging/log.h>
#include <zephyr/random/random.h>
#include <zephyr/sys/util.h>

#include <bms_port.h>

LOG_MODULE_REGISTER(bms_random, CONFIG_BMS_LOG_LEVEL);

/* CONFIG_CSPRNG_NEEDED (prj.conf) enables the entropy driver where the devicetree has one. */
BUILD_ASSERT(IS_ENABLED(CONFIG_CSPRNG_ENABLED),
	     "no cryptographically secure random source on this board (zephyr,entropy)");

int bms_port_random(uint8_t *buf, size_t len)
{
	int err;

	if (buf == NULL && len > 0) {
		return -EIO;
	}

	err = sys_csrand_get(buf, len);
	if (err) {
		LOG_ERR("No random bytes (err %d)", err);
		return -EIO;
	}

	return 0;
}
