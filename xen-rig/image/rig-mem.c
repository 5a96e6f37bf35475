// SPDX-License-Identifier: GPL-2.0
/*
 * rig-mem: the guest half of xen-rig's "memory" scenario (built out of tree like i2c-virtio.ko).
 * Fills two contiguous pages with a known pattern (byte i of the pair = (i * 7 + 0x5a) & 0xff, xor 0xff on
 * the second page), grants the first page to dom0, reserves a second grant reference and leaves it
 * empty (a reference the guest never granted), and publishes
 *     data/rig-mem = "<gfn of the first page, hex> <granted ref> <ungranted ref>"
 * in the guest's own xenstore directory, where dom0 reads it. Unloading revokes the grant.
 */
#include <linux/module.h>
#include <linux/gfp.h>
#include <linux/mm.h>
#include <xen/xen.h>
#include <xen/page.h>
#include <xen/grant_table.h>
#include <xen/xenbus.h>

static struct page *pages;
static grant_ref_t granted, reserved_head, ungranted;

static int __init rig_mem_init(void)
{
	unsigned long gfn;
	u8 *p;
	int i, err;

	if (!xen_domain())
		return -ENODEV;
	pages = alloc_pages(GFP_KERNEL, 1);
	if (!pages)
		return -ENOMEM;
	p = page_address(pages);
	for (i = 0; i < 2 * XEN_PAGE_SIZE; i++)
		p[i] = (u8)(i * 7 + 0x5a) ^ (i >= XEN_PAGE_SIZE ? 0xff : 0);
	gfn = xen_page_to_gfn(pages);
	err = gnttab_grant_foreign_access(0, gfn, 0);
	if (err < 0)
		goto free_pages;
	granted = err;
	err = gnttab_alloc_grant_references(1, &reserved_head);
	if (err < 0)
		goto end_access;
	ungranted = gnttab_claim_grant_reference(&reserved_head);
	err = xenbus_printf(XBT_NIL, "data", "rig-mem", "%lx %u %u", gfn, granted, ungranted);
	if (err)
		goto free_ref;
	pr_info("rig-mem: gfn 0x%lx granted ref %u, ungranted ref %u\n", gfn, granted, ungranted);
	return 0;
free_ref:
	gnttab_free_grant_reference(ungranted);
end_access:
	gnttab_end_foreign_access(granted, NULL);
free_pages:
	__free_pages(pages, 1);
	return err;
}

static void __exit rig_mem_exit(void)
{
	gnttab_free_grant_reference(ungranted);
	gnttab_end_foreign_access(granted, NULL);	/* frees nothing: the pages go below */
	__free_pages(pages, 1);
}

module_init(rig_mem_init);
module_exit(rig_mem_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("xen-rig memory scenario: a patterned page granted to dom0");
