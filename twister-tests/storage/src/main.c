/*
 * SPDX-License-Identifier: Apache-2.0
 * Copyright (c) 2026 The OpenBMS authors
 *
 * storage.c (bms_port.h storage on the settings subsystem, ZMS backend) on the flash
 * simulator. The restart test really restarts: the first boot stores a record and calls
 * sys_reboot(), native_sim re-executes itself with the same flash file, and the second boot
 * checks the record.
 */

#include <string.h>

#include <zephyr/kernel.h>
#include <zephyr/settings/settings.h>
#include <zephyr/sys/reboot.h>
#include <zephyr/ztest.h>

#include <bms.h>
#include <bms_port.h>

#include "app.h"
#include "support.h"

#define RESTART_KEY "bms/t_restart"
#define PHASE_KEY "test/phase"
/* The core's settings record (rust/bms-ffi/src/port.rs) and the code raised when it is bad
 * (Code::SettingsCorrupt = 1 in rust/bms-core/src/codes.rs; bms_outputs.codes bit n = code n).
 */
#define SETTINGS_KEY "bms/settings"
#define CODE_SETTINGS_CORRUPT BIT(1)

static const uint8_t restart_record[] = {0x01, 0x00, 0xfe, 0x42, 0x13, 0x37, 0x00, 0xff};

static void *storage_setup(void)
{
	uint8_t phase[1];
	size_t len;

	zassert_ok(storage_init());

	if (bms_port_storage_read(PHASE_KEY, phase, sizeof(phase), &len) == -ENOENT) {
		/* First boot: store, then restart the whole process on the same flash file. */
		zassert_ok(bms_port_storage_write(RESTART_KEY, restart_record,
						  sizeof(restart_record)));
		zassert_ok(settings_save_one(PHASE_KEY, "2", 1));
		sys_reboot(SYS_REBOOT_COLD);
	}
	return NULL;
}

/* SET-2: a record stored through bms_port_storage_write() is read back unchanged after a
 * restart of the process (flash simulator file kept).
 */
ZTEST(storage, test_set_2_record_survives_restart)
{
	uint8_t buf[32];
	size_t len = 0;

	zassert_ok(bms_port_storage_read(RESTART_KEY, buf, sizeof(buf), &len));
	zassert_equal(len, sizeof(restart_record));
	zassert_mem_equal(buf, restart_record, sizeof(restart_record));

	/* Leave the flash file ready for a first boot next run. */
	zassert_ok(bms_port_storage_delete(RESTART_KEY));
	zassert_ok(settings_delete(PHASE_KEY));
}

/* The storage port: exact round trip, overwrite, delete, missing record, short buffer,
 * bad keys (bms_port.h return values).
 */
ZTEST(storage, test_port_round_trip_and_errors)
{
	static const uint8_t a[] = {1, 2, 3};
	static const uint8_t b[] = {9, 8, 7, 6, 5};
	uint8_t buf[8];
	size_t len = 0;

	zassert_equal(bms_port_storage_read("bms/t_none", buf, sizeof(buf), &len), -ENOENT);

	zassert_ok(bms_port_storage_write("bms/t_rt", a, sizeof(a)));
	zassert_ok(bms_port_storage_read("bms/t_rt", buf, sizeof(buf), &len));
	zassert_equal(len, sizeof(a));
	zassert_mem_equal(buf, a, sizeof(a));

	zassert_ok(bms_port_storage_write("bms/t_rt", b, sizeof(b)));
	zassert_ok(bms_port_storage_read("bms/t_rt", buf, sizeof(buf), &len));
	zassert_equal(len, sizeof(b));
	zassert_mem_equal(buf, b, sizeof(b));

	zassert_equal(bms_port_storage_read("bms/t_rt", buf, 4, &len), -ENOSPC,
		      "a record longer than the buffer must not be copied");

	zassert_ok(bms_port_storage_delete("bms/t_rt"));
	zassert_equal(bms_port_storage_read("bms/t_rt", buf, sizeof(buf), &len), -ENOENT);
	zassert_ok(bms_port_storage_delete("bms/t_rt"), "deleting a missing record is fine");

	zassert_equal(bms_port_storage_write("bms/key-longer-than-15", a, sizeof(a)), -EINVAL);
	zassert_equal(bms_port_storage_write(NULL, a, sizeof(a)), -EINVAL);
	zassert_equal(bms_port_storage_read("", buf, sizeof(buf), &len), -EINVAL);
}

/* SET-2: every record key the core uses is stored as it is, generically: "bms/secrets" and
 * "bms/point" like the others; a key is never answered with a longer or a nested record
 * ("bms/so" is not "bms/soc", "bms/soc" is not "bms/soc/x").
 */
ZTEST(storage, test_set_2_any_core_key_stored_exactly)
{
	static const char *const keys[] = {
		"bms/settings", "bms/soc",   "bms/point", "bms/hist",  "bms/hpt",
		"bms/hcnt",     "bms/nonce", "bms/secrets", "bms/learn", "bms/name",
	};
	static const uint8_t nested[] = {0xee};
	uint8_t buf[8];
	size_t len = 0;

	for (size_t i = 0; i < ARRAY_SIZE(keys); i++) {
		uint8_t record[] = {0xa5, (uint8_t)i, 0x00, 0xff};

		zassert_ok(bms_port_storage_write(keys[i], record, sizeof(record)), "%s", keys[i]);
	}
	zassert_ok(settings_save_one("bms/soc/x", nested, sizeof(nested)));

	for (size_t i = 0; i < ARRAY_SIZE(keys); i++) {
		uint8_t record[] = {0xa5, (uint8_t)i, 0x00, 0xff};

		zassert_ok(bms_port_storage_read(keys[i], buf, sizeof(buf), &len), "%s", keys[i]);
		zassert_equal(len, sizeof(record), "%s", keys[i]);
		zassert_mem_equal(buf, record, sizeof(record), "%s", keys[i]);
	}
	zassert_equal(bms_port_storage_read("bms/so", buf, sizeof(buf), &len), -ENOENT);

	zassert_ok(settings_delete("bms/soc/x"));
	for (size_t i = 0; i < ARRAY_SIZE(keys); i++) {
		zassert_ok(bms_port_storage_delete(keys[i]), "%s", keys[i]);
	}
}

/* SET-3: a corrupted stored settings record is never applied: the core opens with defaults
 * and reports "settings corrupt".
 */
ZTEST(storage, test_set_3_corrupt_settings_record_rejected)
{
	static const uint8_t corrupt[] = {0x01, 0xde, 0xad, 0xbe, 0xef, 0x00, 0x00, 0x00};
	struct bms_inputs in = {.remote_l_mv = 0, .remote_h_mv = 0, .supply_mv = 13200};
	struct bms_outputs out;
	struct bms *bms;

	zassert_ok(settings_save_one(SETTINGS_KEY, corrupt, sizeof(corrupt)));

	bms = bms_open();
	zassert_not_null(bms, "the core must open with defaults over a corrupt record");
	zassert_ok(bms_step(bms, k_uptime_get(), &in, &out));
	zassert_true((out.codes & CODE_SETTINGS_CORRUPT) != 0,
		     "corrupt settings not reported (codes 0x%08x)", out.codes);
	zassert_ok(bms_close(bms));

	zassert_ok(settings_delete(SETTINGS_KEY));
}

ZTEST_SUITE(storage, NULL, storage_setup, NULL, NULL, NULL);
