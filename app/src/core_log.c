/*
 * SPDX-License-Identifier: Apache-2.0
 * Copyright (c) 2026 The OpenBMS authors
 *
 * bms_port_log(): the core's log records on Zephyr logging, in their own module "bms_core"
 * so that they can be filtered apart from the C glue.
 */

#include <string.h>

#include <zephyr/logging/log.h>
#include <zephyr/sys/util.h>

#include <bms_port.h>

LOG_MODULE_REGISTER(bms_core, CONFIG_BMS_LOG_LEVEL);

/* Longest library log line printed; a longer one is cut. */
#define LOG_LINE_MAX 200

void bms_port_log(uint8_t level, const char *msg, size_t len)
{
	/* The text is not NUL-terminated and lives only during the call: copy it into a
	 * terminated string, which the logger copies again in deferred mode.
	 */
	char line[LOG_LINE_MAX + 1];
	size_t n = MIN(len, (size_t)LOG_LINE_MAX);

	if (msg == NULL) {
		return;
	}
	memcpy(line, msg, n);
	line[n] = '\0';

	switch (level) {
	case 1:
		LOG_ERR("%s", line);
		break;
	case 2:
		LOG_WRN("%s", line);
		break;
	case 3:
		LOG_INF("%s", line);
		break;
	default:
		LOG_DBG("%s", line);
		break;
	}
}
