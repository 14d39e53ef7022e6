package attendwise;

import java.nio.file.Path;
import java.time.Duration;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicReference;

import org.neo4j.configuration.GraphDatabaseInternalSettings;
import org.neo4j.configuration.GraphDatabaseSettings;
import org.neo4j.configuration.connectors.BoltConnector;
import org.neo4j.configuration.connectors.HttpConnector;
import org.neo4j.configuration.connectors.HttpsConnector;
import org.neo4j.configuration.helpers.SocketAddress;
import org.neo4j.dbms.api.DatabaseManagementService;
import org.neo4j.dbms.api.DatabaseManagementServiceBuilder;
import org.neo4j.graphdb.GraphDatabaseService;
import org.neo4j.io.ByteUnit;

/**
 * Embedded Neo4j community server for AttendWise: Bolt on loopback only, no HTTP, no auth.
 *
 * <pre>
 * Usage: Neo4jLauncher [DATA_DIR] [PORT]
 *   DATA_DIR  falls back to env NEO4J_DATA_DIR (required one way or the other)
 *   PORT      falls back to env NEO4J_BOLT_PORT, then 7687
 *   env NEO4J_PAGECACHE  page cache size, default 128m
 * </pre>
 *
 * Prints {@code neo4j ready bolt://127.0.0.1:PORT} once the default database is available, then
 * blocks. SIGTERM/SIGINT shut the management service down cleanly and exit with status 0.
 * Start-up failure (port in use, data dir locked, ...) exits with status 1.
 */
public final class Neo4jLauncher {

    private Neo4jLauncher() {}

    public static void main(String[] args) throws Exception {
        String dataDir = args.length > 0 ? args[0] : System.getenv("NEO4J_DATA_DIR");
        if (dataDir == null || dataDir.isBlank()) {
            System.err.println("usage: Neo4jLauncher DATA_DIR [PORT]  (or env NEO4J_DATA_DIR / NEO4J_BOLT_PORT)");
            System.exit(2);
        }
        String portStr = args.length > 1 ? args[1] : System.getenv("NEO4J_BOLT_PORT");
        int port = 7687;
        if (portStr != null && !portStr.isBlank()) {
            try {
                port = Integer.parseInt(portStr.trim());
            } catch (NumberFormatException e) {
                System.err.println("invalid port: " + portStr);
                System.exit(2);
            }
        }
        String pageCache = System.getenv().getOrDefault("NEO4J_PAGECACHE", "128m");

        AtomicReference<DatabaseManagementService> ref = new AtomicReference<>();
        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            DatabaseManagementService dbms = ref.getAndSet(null);
            try {
                if (dbms != null) {
                    System.out.println("neo4j shutting down");
                    System.out.flush();
                    dbms.shutdown();
                }
            } catch (Throwable t) {
                t.printStackTrace();
            } finally {
                stopped.countDown();
            }
        }, "neo4j-shutdown"));
        // The JVM's default SIGTERM/SIGINT handling runs the hook above but exits with 143/130;
        // exit with 0 instead so supervisors see a clean stop (hooks still run via System.exit).
        for (String sig : new String[] {"TERM", "INT"}) {
            try {
                sun.misc.Signal.handle(new sun.misc.Signal(sig), s -> System.exit(0));
            } catch (Throwable ignored) {
                // signal not available on this platform: keep the JVM default
            }
        }

        Path home = Path.of(dataDir).toAbsolutePath();
        try {
            ref.set(new DatabaseManagementServiceBuilder(home)
                    .setConfig(BoltConnector.enabled, true)
                    .setConfig(BoltConnector.listen_address, new SocketAddress("127.0.0.1", port))
                    .setConfig(BoltConnector.advertised_address, new SocketAddress("127.0.0.1", port))
                    .setConfig(HttpConnector.enabled, false)
                    .setConfig(HttpsConnector.enabled, false)
                    .setConfig(GraphDatabaseSettings.auth_enabled, false)
                    .setConfig(GraphDatabaseSettings.default_listen_address, new SocketAddress("127.0.0.1"))
                    .setConfig(GraphDatabaseSettings.pagecache_memory, ByteUnit.parse(pageCache))
                    .setConfig(GraphDatabaseSettings.tx_state_max_off_heap_memory, ByteUnit.mebiBytes(64))
                    .setConfig(GraphDatabaseSettings.shutdown_transaction_end_timeout, Duration.ofSeconds(5))
                    // no "anonymous usage data" pings
                    .setConfig(GraphDatabaseSettings.udc_enabled, false)
                    // Netty's default graceful shutdown (5 s quiet period, 15 s timeout) makes SIGTERM
                    // take ~10 s after the databases are already checkpointed; shorten it.
                    .setConfig(GraphDatabaseInternalSettings.netty_server_shutdown_quiet_period, 0)
                    .setConfig(GraphDatabaseInternalSettings.netty_server_shutdown_timeout, Duration.ofSeconds(3))
                    .build());
        } catch (Throwable t) {
            // e.g. port already in use, or the data dir locked by another instance
            t.printStackTrace();
            Throwable root = t;
            while (root.getCause() != null) {
                root = root.getCause();
            }
            System.err.println("neo4j failed to start: " + root);
            System.exit(1);
            return;
        }

        DatabaseManagementService dbms = ref.get();
        if (dbms == null) {
            return; // a signal arrived during start-up; the hook is handling it
        }
        GraphDatabaseService db = dbms.database(GraphDatabaseSettings.DEFAULT_DATABASE_NAME);
        while (!db.isAvailable(Duration.ofSeconds(1).toMillis())) {
            if (ref.get() == null) {
                return;
            }
        }
        System.out.println("neo4j ready bolt://127.0.0.1:" + port);
        System.out.flush();

        stopped.await();
    }
}
