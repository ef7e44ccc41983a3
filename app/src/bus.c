/*
 * SPDX-License-Identifier: Apache-2.0
 * Copyright (c) 2026 The OpenBMS authors
 *
 * The battery-bus receiver: the UART interrupt moves bytes into a ring buffer and signals the
 * control thread, which drains the buffer straight into the core's frame decoder
 * (bms_feed_bus). Nothing here interprets a byte: delimiting, COBS, CRC and decoding are the
 * core's. Receive pattern of samples/drivers/uart/echo_bot.
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

static const struct device *const bus_uart = DEVICE_DT_GET(DT_PHANDLE(BMS_IO, battery_bus));

/* One producer (the UART interrupt), one consumer (the control thread): no lock needed. */
RING_BUF_DECLARE(rx_ring, CONFIG_BMS_BUS_RX_BUF_SIZE);
static K_SEM_DEFINE(rx_sem, 0, 1);
static atomic_t rx_dropped;

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

void bus_poll_event_init(struct k_poll_event *event)
{
	k_poll_event_init(event, K_POLL_TYPE_SEM_AVAILABLE, K_POLL_MODE_NOTIFY_ONLY, &rx_sem);
}

size_t bus_read(uint8_t *buf, size_t cap)
{
	atomic_val_t dropped;

	/* Taken before reading: bytes that arrive meanwhile give the semaphore again. */
	(void)k_sem_take(&rx_sem, K_NO_WAIT);

	dropped = atomic_set(&rx_dropped, 0);
	if (dropped > 0) {
		LOG_WRN("Battery bus: %ld bytes dropped (receive buffer full)", (long)dropped);
	}

	return ring_buf_get(&rx_ring, buf, (uint32_t)MIN(cap, UINT32_MAX));
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

	uart_irq_rx_enable(bus_uart);

	return 0;
}
