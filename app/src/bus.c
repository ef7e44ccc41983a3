/*
 * SPDX-License-Identifier: Apache-2.0
 * Copyright (c) 2026 The OpenBMS authors
 *
 * The battery-bus receiver: the UART interrupt moves bytes into a ring buffer, the bus thread
 * cuts them into chunks that end at a frame delimiter (0x00, docs/battery-bus.md) and hands
 * each chunk to the control thread, which feeds it to the core's frame decoder. Nothing here
 * interprets a frame: COBS, CRC and decoding are the core's. Receive pattern of
 * samples/drivers/uart/echo_bot.
 */

#include <zephyr/device.h>
#include <zephyr/devicetree.h>
#include <zephyr/drivers/uart.h>
#include <zephyr/kernel.h>
#include <zephyr/logging/log.h>
#include <zephyr/sys/ring_buffer.h>

#include "app.h"

LOG_MODULE_REGISTER(bms_bus, CONFIG_BMS_LOG_LEVEL);

#define BMS_IO DT_COMPAT_GET_ANY_STATUS_OKAY(openbms_bms_io)
#define FRAME_DELIMITER 0x00

static const struct device *const bus_uart = DEVICE_DT_GET(DT_PHANDLE(BMS_IO, battery_bus));

RING_BUF_DECLARE(rx_ring, CONFIG_BMS_BUS_RX_BUF_SIZE);
static K_SEM_DEFINE(rx_sem, 0, 1);
static atomic_t rx_dropped;

K_THREAD_STACK_DEFINE(bus_stack, CONFIG_BMS_BUS_STACK_SIZE);
static struct k_thread bus_thread_data;

static void uart_cb(const struct device *dev, void *user_data)
{
	uint8_t buf[32];
	int len;

	ARG_UNUSED(user_data);

	if (!uart_irq_update(dev)) {
		return;
	}

	if (!uart_irq_rx_ready(dev)) {
		return;
	}

	while ((len = uart_fifo_read(dev, buf, sizeof(buf))) > 0) {
		uint32_t put = ring_buf_put(&rx_ring, buf, (uint32_t)len);

		if (put < (uint32_t)len) {
			atomic_add(&rx_dropped, (atomic_val_t)((uint32_t)len - put));
		}
	}

	k_sem_give(&rx_sem);
}

static void bus_thread(void *p1, void *p2, void *p3)
{
	uint8_t chunk[APP_BUS_CHUNK_LEN];
	size_t len = 0;

	ARG_UNUSED(p1);
	ARG_UNUSED(p2);
	ARG_UNUSED(p3);

	for (;;) {
		uint8_t byte;

		k_sem_take(&rx_sem, K_FOREVER);

		while (ring_buf_get(&rx_ring, &byte, 1) == 1) {
			chunk[len++] = byte;
			if (byte == FRAME_DELIMITER || len == sizeof(chunk)) {
				(void)control_post_bus(chunk, len);
				len = 0;
			}
		}

		/* Hand over a partial frame too, so that the core sees bytes as they arrive. */
		if (len > 0) {
			(void)control_post_bus(chunk, len);
			len = 0;
		}

		atomic_val_t dropped = atomic_set(&rx_dropped, 0);

		if (dropped > 0) {
			LOG_WRN("Battery bus: %ld bytes dropped (receive buffer full)", (long)dropped);
		}
	}
}

int bus_init(void)
{
	int err;

	if (!device_is_ready(bus_uart)) {
		LOG_ERR("Battery-bus UART %s not ready", bus_uart->name);
		return -ENODEV;
	}

	err = uart_irq_callback_user_data_set(bus_uart, uart_cb, NULL);
	if (err) {
		LOG_ERR("UART callback not set (err %d)", err);
		return err;
	}

	k_thread_create(&bus_thread_data, bus_stack, K_THREAD_STACK_SIZEOF(bus_stack), bus_thread,
			NULL, NULL, NULL, CONFIG_BMS_BUS_PRIORITY, 0, K_NO_WAIT);
	k_thread_name_set(&bus_thread_data, "bms_bus");

	uart_irq_rx_enable(bus_uart);

	return 0;
}
