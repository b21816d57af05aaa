// An app-supplied KeyStore implemented in Kotlin (mirrors python/tests/test_keystore.py).
package covey

import java.io.File
import java.util.concurrent.ConcurrentHashMap
import java.util.concurrent.CopyOnWriteArrayList
import kotlin.test.assertContains
import kotlin.test.assertContentEquals
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertFalse
import kotlin.test.assertTrue
import org.junit.jupiter.api.Test

/** Keeps secrets in a map and records every call (names only, never values). */
class MapKeyStore : KeyStore {
    val secrets = ConcurrentHashMap<String, ByteArray>()
    val stored = CopyOnWriteArrayList<String>()
    val loaded = CopyOnWriteArrayList<String>()

    override fun load(name: String): ByteArray? {
        loaded.add(name)
        return secrets[name]?.copyOf()
    }

    override fun store(name: String, secret: ByteArray) {
        stored.add(name)
        secrets[name] = secret.copyOf()
    }
}

class BrokenKeyStore(private val error: () -> Exception) : KeyStore {
    override fun load(name: String): ByteArray? = throw error()

    override fun store(name: String, secret: ByteArray) = throw error()
}

class KeyStoreTest : CoveyTestBase() {

    @Test
    fun `a Kotlin key store holds the device and group keys`() = coveyTest { nodes ->
        val ks = MapKeyStore()
        val d = nodes.dir("n")
        val node = Node.open(config(d, keyStore = ks))
        val firstId = try {
            assertTrue("device" in ks.stored)
            assertEquals(32, ks.secrets.getValue("device").size)
            val g = node.joinPassphrase("marble kelp oboe thicket", "keystore-group")
            assertTrue("group-${g.groupId}" in ks.stored, ks.stored.toString())
            node.publish(g.groupId, "kept".toByteArray())
            node.nodeId() to g.groupId
        } finally {
            node.shutdown()
            node.close()
        }
        // Nothing secret went to the data dir.
        assertFalse(File(d, "keys").exists())

        val storedBefore = ks.stored.toList()
        val again = nodes.track(Node.open(config(d, keyStore = ks)))
        assertEquals(firstId.first, again.nodeId())
        assertEquals(storedBefore, ks.stored.toList()) // loaded, not re-created
        assertTrue("device" in ks.loaded)
        val entry = again.entries(firstId.second, 0uL, 10u).single()
        assertContentEquals("kept".toByteArray(), entry.payload)
    }

    @Test
    fun `a key store throwing KeyStoreException is a storage error`() =
        throwingKeyStore { KeyStoreException.Failed("keychain locked") }

    @Test
    fun `a key store throwing RuntimeException is a storage error`() =
        throwingKeyStore { RuntimeException("keychain locked") }

    private fun throwingKeyStore(error: () -> Exception) = coveyTest { nodes ->
        val d = nodes.dir("n")
        val err = assertFailsWith<CoveyException.Storage> {
            nodes.track(Node.open(config(d, keyStore = BrokenKeyStore(error))))
        }
        assertContains(err.detail, "key store")
        assertContains(err.detail, "keychain locked")
        // The failed open released the data dir: a node with a working store opens it.
        nodes.open(d, keyStore = MapKeyStore())
    }

    @Test
    fun `a key store returning a bad device key is refused`() = coveyTest { nodes ->
        val ks = MapKeyStore()
        ks.secrets["device"] = "too short".toByteArray()
        assertFailsWith<CoveyException.Crypto> {
            nodes.track(Node.open(config(nodes.dir("n"), keyStore = ks)))
        }
    }
}
