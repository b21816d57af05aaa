// Managed groups: create, invite by link and by short code, remove a member (a new epoch, and
// the removed member told), leave, and the admin-only calls refused to a member (mirrors python/tests/test_managed.py).
package covey

import kotlin.test.assertContains
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertFalse
import kotlin.test.assertTrue
import kotlin.time.Duration.Companion.seconds
import kotlinx.coroutines.delay
import org.junit.jupiter.api.Test

class ManagedGroupsTest : CoveyTestBase() {

    private suspend fun payloads(node: Node, groupId: String): Set<String> =
        entriesOf(node, groupId).map { it.payload.decodeToString() }.toSet()

    private suspend fun epochOf(node: Node, groupId: String): ULong =
        node.groups().single { it.groupId == groupId }.epoch

    @Test
    fun `create, invite by link and code, remove a member, leave`() = coveyTest { nodes ->
        val a = nodes.open()
        val b = nodes.open()
        // A short code is found through the DHT: C knows A as its bootstrap.
        val c = nodes.open(bootstrap = listOf(a.addr()))

        val info = a.createGroup("family")
        assertEquals(GroupKind.MANAGED, info.kind)
        assertEquals(0uL, info.epoch)
        assertEquals(1u, info.memberCount)
        val g = info.groupId
        val me = a.members(g).single()
        assertTrue(me.isSelf)
        assertEquals(MemberRole.ADMIN, me.role)

        // B joins by link, C by short code.
        val forB = a.createInvite(g, 3600uL, true)
        assertTrue(forB.link.startsWith("covey:invite/"), "a link")
        assertTrue(forB.expiresAtMs > 0uL)
        val joined = b.acceptInvite(forB.link)
        assertEquals(g, joined.groupId)
        assertEquals(GroupKind.MANAGED, joined.kind)
        assertEquals("family", joined.name)
        val forC = a.createInvite(g, 600uL, true)
        assertEquals(9, forC.shortCode.length, "xxxx-xxxx")
        assertEquals(g, c.acceptInvite(forC.shortCode).groupId)

        // Everyone publishes; everyone converges.
        a.publish(g, "from a".toByteArray())
        b.publish(g, "from b".toByteArray())
        c.publish(g, "from c".toByteArray())
        val all = setOf("from a", "from b", "from c")
        for ((node, name) in listOf(a to "a", b to "b", c to "c")) {
            waitFor("$name to hold all three entries") { payloads(node, g) == all }
        }
        val roles = a.members(g).associate { it.nodeId to it.role }
        assertEquals(
            mapOf(a.nodeId() to MemberRole.ADMIN, b.nodeId() to MemberRole.MEMBER, c.nodeId() to MemberRole.MEMBER),
            roles,
        )
        waitFor("b to know all three members") { b.members(g).size == 3 }

        // A member may not remove or invite.
        assertFailsWith<CoveyException.PermissionDenied>("a member removing the admin") {
            b.removeMember(g, a.nodeId())
        }
        assertFailsWith<CoveyException.PermissionDenied>("a member inviting") {
            b.createInvite(g, 60uL, true)
        }
        assertFailsWith<CoveyException.InvalidInput>("a malformed node id") {
            a.removeMember(g, "not a node id")
        }

        // A removes C: a new epoch, which B follows.
        val seen = Recorder()
        val seenByC = Recorder()
        nodes.subscribe(b, seen)
        nodes.subscribe(c, seenByC)
        a.removeMember(g, c.nodeId())
        assertEquals(1uL, epochOf(a, g))
        assertEquals(setOf(a.nodeId(), b.nodeId()), a.members(g).map { it.nodeId }.toSet())
        waitFor("b to reach epoch 1") { epochOf(b, g) == 1uL }
        waitUntil("a GroupChanged event at epoch 1 on b") {
            seen.of<Event.GroupChanged>().any { it.groupId == g && it.epoch == 1uL }
        }

        // What A publishes after the removal reaches B, never C. C is told (the removal reaches
        // it before its session ends) and can publish no more.
        a.publish(g, "after".toByteArray())
        waitUntil("a removed-from-group warning on c") {
            seenByC.of<Event.Warning>().any { it.kind == "removed-from-group" }
        }
        assertFailsWith<CoveyException.PermissionDenied>("a removed member publishing") {
            c.publish(g, "c after removal".toByteArray())
        }
        waitFor("b to get the post-removal entry") { payloads(b, g) == all + "after" }
        delay(2.seconds)
        assertFalse("after" in payloads(c, g))
        assertFalse("c after removal" in payloads(a, g))
        assertFalse("c after removal" in payloads(b, g))
        assertEquals(0uL, epochOf(c, g))

        // B leaves: the group is gone there; A keeps it.
        b.leaveGroup(g)
        assertFailsWith<CoveyException.NotFound>("entries after leaving") { b.entries(g, 0uL, 10u) }
        assertTrue(b.groups().isEmpty())
        assertTrue("from b" in payloads(a, g))
    }

    @Test
    fun `a used link, and a passphrase group, are refused`() = coveyTest { nodes ->
        val a = nodes.open()
        val b = nodes.open()
        val c = nodes.open()
        val g = a.createGroup("team").groupId
        val once = a.createInvite(g, 60uL, true)
        b.acceptInvite(once.link)
        assertFailsWith<CoveyException.PermissionDenied>("a used single-use link") {
            c.acceptInvite(once.link)
        }
        assertTrue(c.groups().isEmpty())

        // A passphrase group has no admin, and its members no role.
        val p = a.joinPassphrase(PASS, "old-style")
        val e = assertFailsWith<CoveyException.InvalidInput> { a.removeMember(p.groupId, b.nodeId()) }
        assertContains(e.detail, "passphrase groups have no admin")
        assertEquals(listOf<MemberRole?>(null), a.members(p.groupId).map { it.role })
        assertFailsWith<CoveyException.InvalidInput>("an invite to a passphrase group") {
            a.createInvite(p.groupId, 60uL, true)
        }
    }

    /** Polls a suspending condition until it holds (bounded by [DEADLINE]). */
    private suspend fun waitFor(what: String, cond: suspend () -> Boolean) {
        eventually(what) { if (cond()) Unit else null }
    }
}
